//! Identity keys in the leader's registry (the `public_key` column of
//! `peers`) and its join invitations (`invites`: only the SHA-256 of each
//! secret is kept).

use d_proto::keys::PublicKey;
use d_proto::types::PeerInfo;
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::{RegistryError, Store};

/// An invitation as the leader keeps it (`d invite --list` shows these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteRow {
    pub token_id: String,
    #[serde(skip)]
    pub secret_hash: [u8; 32],
    /// The peer id it was minted for, if any.
    pub id: Option<String>,
    /// It may replace the key `id` is enrolled under (`d invite --replace`).
    pub replace: bool,
    /// Unix seconds.
    pub created: u64,
    pub expires: u64,
    pub spent_at: Option<u64>,
    pub spent_by: Option<String>,
    pub revoked: bool,
    /// It makes a new leader of the mesh (`d invite --leader`).
    #[serde(default)]
    pub as_leader: bool,
}

impl InviteRow {
    /// Why it cannot be used at `now`, if it cannot.
    pub fn unusable(&self, now: u64) -> Option<String> {
        let t = &self.token_id;
        if self.revoked {
            return Some(format!("join token {t} was revoked on the leader"));
        }
        if let Some(by) = &self.spent_by {
            return Some(format!(
                "join token {t} was already used (by {by}): a token joins one machine once"
            ));
        }
        if now >= self.expires {
            return Some(format!(
                "join token {t} expired {}s ago",
                now - self.expires
            ));
        }
        None
    }
}

/// Invitations spent, revoked or expired this long ago are deleted.
pub const INVITE_KEEP_SECS: u64 = 7 * 24 * 3600;
/// Most invitations a leader keeps unspent at once.
/// What an enrollment changed besides the row (its caller closes sessions).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Enrolled {
    /// The ids the key was enrolled under before (now tombstoned).
    pub renamed_from: Vec<String>,
    /// Whether the id had another key before (replaced by a `--replace` token).
    pub replaced: bool,
}

pub const MAX_OPEN_INVITES: u64 = 10_000;

const INVITE_COLUMNS: &str =
    "token_id, secret_hash, id, replace_key, created, expires, spent_at, spent_by, revoked, as_leader";

fn row_to_invite(r: &rusqlite::Row<'_>) -> rusqlite::Result<InviteRow> {
    let hash: Vec<u8> = r.get(1)?;
    Ok(InviteRow {
        token_id: r.get(0)?,
        secret_hash: hash.as_slice().try_into().unwrap_or([0; 32]),
        id: r.get(2)?,
        replace: r.get::<_, i64>(3)? != 0,
        created: r.get::<_, i64>(4)? as u64,
        expires: r.get::<_, i64>(5)? as u64,
        spent_at: r.get::<_, Option<i64>>(6)?.map(|t| t as u64),
        spent_by: r.get(7)?,
        revoked: r.get::<_, i64>(8)? != 0,
        as_leader: r.get::<_, i64>(9)? != 0,
    })
}

impl Store {
    /// The key `id` is enrolled under.
    pub fn enrolled_key(&self, id: &str) -> Result<Option<PublicKey>, RegistryError> {
        let k: Option<Option<String>> = self
            .conn
            .query_row("SELECT public_key FROM peers WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(k.flatten().and_then(|k| PublicKey::from_base64(&k).ok()))
    }

    /// `d rotateKey`: `id`'s key becomes `new` if it is `old` now. `Err`
    /// (the reason) when `id` has another key, or `new` is another id's.
    pub fn rotate_key(
        &self,
        id: &str,
        old: &PublicKey,
        new: &PublicKey,
    ) -> Result<Result<(), String>, RegistryError> {
        if let Some(owner) = self.key_owner(new)? {
            return Ok(Err(format!("the new key is already {owner}'s")));
        }
        let n = self.conn.execute(
            "UPDATE peers SET public_key = ?3 WHERE id = ?1 AND public_key = ?2",
            params![id, old.to_base64(), new.to_base64()],
        )?;
        Ok(if n == 1 {
            Ok(())
        } else {
            Err(format!(
                "{id} is not enrolled under key {}",
                old.fingerprint()
            ))
        })
    }

    /// The id `key` is enrolled under.
    pub fn key_owner(&self, key: &PublicKey) -> Result<Option<String>, RegistryError> {
        Ok(self
            .conn
            .query_row(
                "SELECT id FROM peers WHERE public_key = ?1",
                [key.to_base64()],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Enroll `row.public_key` as `row.id`'s key, in one savepoint (the
    /// checks and the writes together, so two dialers racing for one id
    /// cannot both win):
    /// - `spend` (token id, unix now) is marked used by `row.id`;
    /// - an id enrolled under another key is only overwritten by a token
    ///   minted with `--replace`; otherwise "taken", nothing changed;
    /// - without a token, a key already enrolled under another id (a
    ///   renamed machine) may take `row.id` only if no row and no open
    ///   invitation name it; a revoked id is never taken without a token;
    /// - any other id the key was enrolled under goes, tombstoned (only a
    ///   new invitation brings it back).
    ///
    /// `Ok(Err)`: refused (its reason); nothing changed.
    pub fn enroll(
        &mut self,
        row: &PeerInfo,
        spend: Option<(&str, u64)>,
        now: u64,
    ) -> Result<Result<Enrolled, String>, RegistryError> {
        let Some(key) = row.public_key else {
            return Ok(Err("no key to enroll".into()));
        };
        let key64 = key.to_base64();
        let id = &row.id;
        let sp = self.conn.savepoint()?;
        let mut replace = false;
        if let Some((token_id, at)) = spend {
            let n = sp.execute(
                "UPDATE invites SET spent_at = ?2, spent_by = ?3
                 WHERE token_id = ?1 AND spent_at IS NULL AND revoked = 0 AND expires > ?2",
                params![token_id, at as i64, id],
            )?;
            if n == 0 {
                return Ok(Err(format!(
                    "join token {token_id} can no longer be used (spent, revoked or expired)"
                )));
            }
            replace = sp.query_row(
                "SELECT replace_key FROM invites WHERE token_id = ?1",
                [token_id],
                |r| r.get::<_, i64>(0),
            )? != 0;
        }
        let old_ids: Vec<String> = {
            let mut st = sp.prepare("SELECT id FROM peers WHERE public_key = ?1 AND id != ?2")?;
            let rows = st.query_map(params![key64, id], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        if spend.is_none() {
            let revoked = sp
                .query_row("SELECT 1 FROM revoked_ids WHERE id = ?1", [id], |_| Ok(()))
                .optional()?
                .is_some();
            if revoked {
                return Ok(Err(format!(
                    "{id} was revoked on this leader: it needs a new invitation"
                )));
            }
            if !old_ids.is_empty() {
                let named: bool = sp.query_row(
                    "SELECT EXISTS (SELECT 1 FROM peers WHERE id = ?1)
                         OR EXISTS (SELECT 1 FROM invites WHERE id = ?1 AND spent_at IS NULL
                                    AND revoked = 0 AND expires > ?2)",
                    params![id, now as i64],
                    |r| r.get(0),
                )?;
                if named {
                    return Ok(Err(format!(
                        "{id} is already in the registry or named by an open invitation: the member {} cannot rename itself to it",
                        old_ids.join(", ")
                    )));
                }
            }
        }
        let prior: Option<Option<String>> = sp
            .query_row("SELECT public_key FROM peers WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        // (A key is enrolled under one id at most: its old ids go first; a
        // refusal below rolls this back with the rest.)
        for old in &old_ids {
            sp.execute("DELETE FROM peers WHERE id = ?1", [old])?;
            sp.execute(
                "INSERT INTO revoked_ids (id, revoked_at) VALUES (?1, ?2)
                 ON CONFLICT(id) DO UPDATE SET revoked_at = excluded.revoked_at",
                params![old, now as i64],
            )?;
        }
        let n = sp.execute(
            "INSERT INTO peers (id, addr, port, role, version, hostname, first_seen, last_seen, wg_pubkey, public_key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9)
             ON CONFLICT(id) DO UPDATE SET public_key = excluded.public_key
             WHERE peers.public_key IS NULL OR peers.public_key = excluded.public_key OR ?10",
            params![
                id,
                row.addr,
                row.port,
                row.role.as_str(),
                row.version,
                row.hostname,
                now as i64,
                row.wg_public_key,
                key64,
                replace
            ],
        )?;
        if n != 1 {
            return Ok(Err(format!(
                "{id} is enrolled under another key (taken meanwhile): refused"
            )));
        }
        sp.execute("DELETE FROM revoked_ids WHERE id = ?1", [id])?;
        sp.commit()?;
        Ok(Ok(Enrolled {
            renamed_from: old_ids,
            replaced: prior.flatten().is_some_and(|k| k != key64),
        }))
    }

    /// Revoke `id`: its row (and key) goes, and a tombstone stops the
    /// shared mesh key from enrolling it again (only a new invitation can).
    /// Returns whether it had a row.
    pub fn revoke_peer(&mut self, id: &str, now: u64) -> Result<bool, RegistryError> {
        let sp = self.conn.savepoint()?;
        let n = sp.execute("DELETE FROM peers WHERE id = ?1", [id])?;
        sp.execute(
            "INSERT INTO revoked_ids (id, revoked_at) VALUES (?1, ?2)
             ON CONFLICT(id) DO UPDATE SET revoked_at = excluded.revoked_at",
            params![id, now as i64],
        )?;
        sp.commit()?;
        Ok(n > 0)
    }

    /// `d deletePeer` on the leader: `id`'s row goes; if it had an enrolled
    /// key, a tombstone is left as by [`Self::revoke_peer`] (one
    /// transaction), so neither the mesh key nor another member's key can
    /// take the id again without a new invitation. `None`: no such row;
    /// `Some(true)`: it had a key (tombstoned).
    pub fn delete_peer_tombstoned(
        &mut self,
        id: &str,
        now: u64,
    ) -> Result<Option<bool>, RegistryError> {
        let sp = self.conn.savepoint()?;
        let had: Option<Option<String>> = sp
            .query_row("SELECT public_key FROM peers WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(key) = had else {
            return Ok(None);
        };
        sp.execute("DELETE FROM peers WHERE id = ?1", [id])?;
        if key.is_some() {
            sp.execute(
                "INSERT INTO revoked_ids (id, revoked_at) VALUES (?1, ?2)
                 ON CONFLICT(id) DO UPDATE SET revoked_at = excluded.revoked_at",
                params![id, now as i64],
            )?;
        }
        sp.commit()?;
        Ok(Some(key.is_some()))
    }

    /// Whether `id` was revoked (and not enrolled again since).
    pub fn is_revoked(&self, id: &str) -> Result<bool, RegistryError> {
        Ok(self
            .conn
            .query_row("SELECT 1 FROM revoked_ids WHERE id = ?1", [id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// File a new invitation; old spent, revoked and expired ones are pruned.
    /// Refused beyond [`MAX_OPEN_INVITES`] unspent ones.
    pub fn add_invite(&mut self, inv: &InviteRow) -> Result<Result<(), String>, RegistryError> {
        self.add_invites(std::slice::from_ref(inv))
    }

    /// File several invitations at once (`d invite --count`): all or none.
    /// Pruned and counted once, not per row.
    pub fn add_invites(&mut self, invs: &[InviteRow]) -> Result<Result<(), String>, RegistryError> {
        let Some(first) = invs.first() else {
            return Ok(Ok(()));
        };
        self.conn.execute(
            "DELETE FROM invites WHERE (spent_at IS NOT NULL OR revoked != 0 OR expires <= ?1) AND ?1 - created > ?2",
            params![first.created as i64, INVITE_KEEP_SECS as i64],
        )?;
        let open: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM invites WHERE spent_at IS NULL AND revoked = 0 AND expires > ?1",
            [first.created as i64],
            |r| r.get(0),
        )?;
        if open as u64 + invs.len() as u64 > MAX_OPEN_INVITES {
            return Ok(Err(format!(
                "{open} invitations are open already and at most {MAX_OPEN_INVITES} may be: revoke some (`d invite --list`, `d invite --revoke TOKEN_ID`) or let them expire"
            )));
        }
        let sp = self.conn.savepoint()?;
        {
            let mut st = sp.prepare_cached(&format!(
                "INSERT INTO invites ({INVITE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, NULL, 0, ?7)"
            ))?;
            for inv in invs {
                st.execute(params![
                    inv.token_id,
                    inv.secret_hash.to_vec(),
                    inv.id,
                    inv.replace as i64,
                    inv.created as i64,
                    inv.expires as i64,
                    inv.as_leader as i64
                ])?;
            }
        }
        sp.commit()?;
        Ok(Ok(()))
    }

    pub fn get_invite(&self, token_id: &str) -> Result<Option<InviteRow>, RegistryError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {INVITE_COLUMNS} FROM invites WHERE token_id = ?1"),
                [token_id],
                row_to_invite,
            )
            .optional()?)
    }

    /// Every invitation kept, newest first.
    pub fn list_invites(&self) -> Result<Vec<InviteRow>, RegistryError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {INVITE_COLUMNS} FROM invites ORDER BY created DESC, token_id LIMIT 1000"
        ))?;
        let rows = stmt.query_map([], row_to_invite)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Revoke an unspent invitation; returns whether one was revoked.
    pub fn revoke_invite(&self, token_id: &str) -> Result<bool, RegistryError> {
        Ok(self.conn.execute(
            "UPDATE invites SET revoked = 1 WHERE token_id = ?1 AND spent_at IS NULL AND revoked = 0",
            [token_id],
        )? > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use d_proto::keys::KeyPair;
    use d_proto::types::Role;

    fn row(id: &str, key: PublicKey) -> PeerInfo {
        PeerInfo {
            id: id.into(),
            addr: "198.18.0.5".into(),
            port: 3600,
            role: Role::Worker,
            online: false,
            last_seen: None,
            version: "v".into(),
            hostname: "h".into(),
            first_seen: None,
            wg_public_key: None,
            handshake_age_secs: None,
            public_key: Some(key),
            stale: None,
            answered_by: None,
            labels: Vec::new(),
        }
    }

    fn invite(token_id: &str, expires: u64) -> InviteRow {
        InviteRow {
            token_id: token_id.into(),
            secret_hash: [7; 32],
            id: None,
            replace: false,
            created: 100,
            expires,
            spent_at: None,
            spent_by: None,
            revoked: false,
            as_leader: false,
        }
    }

    #[test]
    fn enroll_spend_once_rename_and_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = Store::open(&dir.path().join("d.db")).unwrap();
        let k = KeyPair::generate().unwrap().public();
        st.add_invite(&invite("00000000000000aa", 1000))
            .unwrap()
            .unwrap();
        st.enroll(&row("laptop", k), Some(("00000000000000aa", 200)), 200)
            .unwrap()
            .unwrap();
        assert_eq!(st.enrolled_key("laptop").unwrap(), Some(k));
        assert_eq!(st.key_owner(&k).unwrap().as_deref(), Some("laptop"));
        // The token is spent: a second use changes nothing.
        let k2 = KeyPair::generate().unwrap().public();
        let e = st
            .enroll(&row("other", k2), Some(("00000000000000aa", 201)), 201)
            .unwrap()
            .unwrap_err();
        assert!(e.contains("can no longer be used"), "{e}");
        assert_eq!(st.enrolled_key("other").unwrap(), None);
        let inv = st.get_invite("00000000000000aa").unwrap().unwrap();
        assert_eq!(inv.spent_by.as_deref(), Some("laptop"));
        assert!(inv.unusable(201).unwrap().contains("already used"));
        // An expired token is refused.
        st.add_invite(&invite("00000000000000bb", 300))
            .unwrap()
            .unwrap();
        assert!(st
            .enroll(&row("late", k2), Some(("00000000000000bb", 300)), 300)
            .unwrap()
            .is_err());
        // Renaming moves the key, and tombstones the old id.
        let e = st.enroll(&row("laptop2", k), None, 400).unwrap().unwrap();
        assert_eq!(e.renamed_from, vec!["laptop".to_string()]);
        assert_eq!(st.enrolled_key("laptop").unwrap(), None);
        assert!(st.is_revoked("laptop").unwrap());
        assert_eq!(st.enrolled_key("laptop2").unwrap(), Some(k));
        // Check and write are one: an id enrolled under another key is not
        // overwritten (two racing enrollments: the second is "taken").
        let k3 = KeyPair::generate().unwrap().public();
        let e = st
            .enroll(&row("laptop2", k3), None, 401)
            .unwrap()
            .unwrap_err();
        assert!(e.contains("taken"), "{e}");
        assert_eq!(st.enrolled_key("laptop2").unwrap(), Some(k));
        st.add_invite(&invite("00000000000000dd", 9000))
            .unwrap()
            .unwrap();
        let e = st
            .enroll(&row("laptop2", k3), Some(("00000000000000dd", 402)), 402)
            .unwrap()
            .unwrap_err();
        assert!(e.contains("taken"), "{e}");
        assert!(st
            .get_invite("00000000000000dd")
            .unwrap()
            .unwrap()
            .spent_at
            .is_none());
        // Revoking a token, and a peer.
        st.add_invite(&invite("00000000000000cc", 9000))
            .unwrap()
            .unwrap();
        assert!(st.revoke_invite("00000000000000cc").unwrap());
        assert!(!st.revoke_invite("00000000000000cc").unwrap());
        assert!(st.revoke_peer("laptop2", 500).unwrap());
        assert_eq!(st.enrolled_key("laptop2").unwrap(), None);
        assert!(st.is_revoked("laptop2").unwrap());
        // Without a token a revoked id stays revoked; a new invitation
        // lifts the tombstone.
        assert!(st.enroll(&row("laptop2", k), None, 600).unwrap().is_err());
        st.add_invite(&invite("00000000000000ee", 9000))
            .unwrap()
            .unwrap();
        st.enroll(&row("laptop2", k), Some(("00000000000000ee", 600)), 600)
            .unwrap()
            .unwrap();
        assert!(!st.is_revoked("laptop2").unwrap());
        // A member cannot rename itself onto a row, or an id an open
        // invitation names.
        let mut named = invite("00000000000000ff", 9000);
        named.id = Some("reserved".into());
        st.add_invite(&named).unwrap().unwrap();
        let e = st
            .enroll(&row("reserved", k), None, 700)
            .unwrap()
            .unwrap_err();
        assert!(e.contains("open invitation"), "{e}");
        st.enroll(&row("laptop3", k2), Some(("00000000000000dd", 700)), 700)
            .unwrap()
            .unwrap();
        let e = st
            .enroll(&row("laptop3", k), None, 701)
            .unwrap()
            .unwrap_err();
        assert!(e.contains("taken") || e.contains("registry"), "{e}");
        assert_eq!(st.enrolled_key("laptop2").unwrap(), Some(k));
    }
}
