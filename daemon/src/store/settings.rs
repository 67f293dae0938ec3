//! The daemon's own settings (role, id, leader): key and value text.

use rusqlite::{params, OptionalExtension};

use super::{RegistryError, Store};

impl Store {
    pub fn get_setting(&self, key: &str) -> Result<Option<String>, RegistryError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// `None` deletes the setting.
    pub fn set_setting(&self, key: &str, value: Option<&str>) -> Result<(), RegistryError> {
        match value {
            Some(v) => self.conn.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, v],
            )?,
            None => self
                .conn
                .execute("DELETE FROM settings WHERE key = ?1", [key])?,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        Store::open(&path)
            .unwrap()
            .set_setting("role", Some("leader"))
            .unwrap();
        let s = Store::open(&path).unwrap();
        assert_eq!(s.get_setting("role").unwrap().as_deref(), Some("leader"));
        s.set_setting("role", None).unwrap();
        assert_eq!(s.get_setting("role").unwrap(), None);
    }
}
