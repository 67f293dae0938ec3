//! The top layer: what requests mean. One dispatcher ([`dispatch`]) answers
//! a request whether it came from the control socket or from another peer
//! (`d @peer ...`), and says in one place which requests a peer may ask.
//!
//! - [`Daemon`] (here): the parts of a running daemon put together.
//! - [`dispatch`]: every request: answered, or streamed as a job ([`exec`]).
//! - [`exec`]: a job for a control client, streamed back as it runs.
//! - [`fanout`]: `execOnPeers`, many jobs on one control connection.
//! - [`job`]: starting a job here (shell command, operations action, relay),
//!   and audit records.
//! - [`run_as`]: `--user` (who may run as whom: one place) and `--env` checks.
//! - [`peer`]: the [`Handler`](crate::transport::Handler) peer sessions report to.
//! - [`audit`]: the audit log's writer, which keeps records the database refuses.
//! - [`peer_config`], [`status`], [`doctor`], [`deploy`], [`invite`]: commands.

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use d_proto::types::{ErrorBody, ErrorKind, ExecRecord, Role};
use tokio_util::sync::CancellationToken;

use crate::base::config::Config;
use crate::base::identity::{hostname, Identity, LeaderTrust, Me};
use crate::base::tasks::Tasks;
use crate::base::{idkey, meshkey};
use crate::jobs::JobCtx;
use crate::mesh::Mesh;
use crate::store::Registry;
use crate::transport::Handler;
use d_proto::invite::Invite;
use d_proto::keys::PublicKey;

pub mod audit;
pub mod deploy;
pub mod dispatch;
pub mod doctor;
pub mod exec;
pub mod fanout;
pub mod invite;
pub mod job;
pub mod jobs;
pub mod orphans;
pub mod peer;
pub mod peer_config;
pub mod peer_copy;
pub mod run_as;
pub mod status;

/// A command's answer as JSON text (one value): typed rows go straight to
/// text, and a worker's registry pages are passed on as they came.
pub type Reply = String;

pub fn to_raw<T: serde::Serialize + ?Sized>(v: &T) -> Result<Reply, ErrorBody> {
    serde_json::to_string(v).map_err(|e| ErrorBody::new(ErrorKind::Other, e.to_string()))
}

/// A running daemon: the mesh below, and what only requests need.
pub struct Daemon {
    pub config: Arc<Config>,
    pub mesh: Arc<Mesh>,
    pub started: Instant,
    /// Jobs running now (`getPeerStatus`).
    running_jobs: Arc<AtomicUsize>,
    /// The path this binary was started from (a deploy replaces and re-executes it).
    pub exe: PathBuf,
    /// Set by a deploy: re-execute [`Daemon::exe`] once shut down.
    restart_requested: AtomicBool,
    /// Audit records, kept while the database refuses them.
    pub audit: Arc<audit::Audit>,
    /// Running jobs written down (`<state-dir>/jobs`), for the start after a crash.
    pub ledger: Arc<crate::jobs::ledger::Ledger>,
}

impl Daemon {
    /// Open the state database, load the saved identity and mesh key, and
    /// put the parts together (nothing runs yet).
    pub async fn open(config: Config) -> anyhow::Result<Arc<Daemon>> {
        // Private from the start: it holds the identity key and the
        // registry (a directory that exists already keeps its mode).
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.state_dir)
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot create state directory {}: {e} (use --state-dir or D_STATE_DIR)",
                    config.state_dir.display()
                )
            })?;
        crate::base::clock::init(&config.state_dir);
        let store = Registry::start(&config.state_dir.join("d.db"))?;
        let (
            role,
            id,
            leader,
            (leader_key, leader_keys),
            join_token,
            labels,
            clock,
            retired,
            chain,
        ) = store
            .call(|st| {
                Ok((
                    st.get_setting("role")?,
                    st.get_setting("id")?,
                    st.get_setting("leader")?,
                    (
                        st.get_setting("leader_key")?,
                        st.get_setting("leader_keys")?,
                    ),
                    st.get_setting("join_token")?,
                    st.get_setting("labels")?,
                    st.get_setting("clock_mark")?,
                    st.get_setting(crate::mesh::retire::SETTING)?,
                    st.get_setting(crate::mesh::leader_rotate::CHAIN_SETTING)?,
                ))
            })
            .await?;
        // Retention goes on from where the last run left its clock.
        if let Some(mark) = clock {
            crate::base::clock::resume(&mark);
        }
        let trust = LeaderTrust {
            key: match leader_key {
                Some(k) => Some(PublicKey::from_base64(&k).map_err(|e| {
                    anyhow::anyhow!("the pinned leader key in the state database is damaged: {e} (join again: `d join TOKEN`)")
                })?),
                None => None,
            },
            keys: leader_keys
                .map(|t| LeaderTrust::keys_from_text(&t))
                .unwrap_or_default(),
            join: join_token.and_then(|t| Invite::decode(&t).ok()),
        };
        // `setPeerConfig --labels` (comma-joined in settings) wins over the file.
        let labels: Vec<String> = match labels {
            Some(s) => s
                .split(',')
                .filter(|l| d_proto::validate_label(l).is_ok())
                .map(str::to_string)
                .collect(),
            None => config.labels.clone(),
        };
        let identity = Identity {
            role: role.as_deref().and_then(|r| Role::parse(r).ok()),
            id,
            leader,
        };
        let mesh_key = meshkey::load(&config.state_dir).map_err(|e| {
            anyhow::anyhow!("{e} (fix or remove it; the leader's copy is the reference)")
        })?;
        let (keypair, created) =
            idkey::load_or_create(&config.state_dir).map_err(|e| anyhow::anyhow!("{e}"))?;
        if created {
            tracing::info!(
                "created the identity key {} ({})",
                idkey::path(&config.state_dir).display(),
                keypair.public().fingerprint()
            );
        }
        let me = Arc::new(Me::new(
            hostname(),
            config.state_dir.clone(),
            identity,
            mesh_key,
            keypair,
        ));
        me.set_leader_trust(trust);
        me.set_labels(labels);
        if let Some(chain) = chain {
            match serde_json::from_str(&chain) {
                Ok(c) => me.set_key_chain(c),
                Err(e) => tracing::warn!("the leader's key chain in the state database is damaged ({e}): workers that pinned an older leader key must join again"),
            }
        }
        if retired.is_some() {
            // A key file put back by hand is not a way in again.
            if let Err(e) = me.retire_key() {
                tracing::warn!("the mesh key is retired, but {e}");
            }
        }
        let config = Arc::new(config);
        let audit = audit::Audit::new(store.clone(), config.exec_log);
        let ledger = Arc::new(crate::jobs::ledger::Ledger::new(
            config.state_dir.join("jobs"),
        ));
        Ok(Arc::new_cyclic(|this: &Weak<Daemon>| {
            let handler: Weak<dyn Handler> = this.clone();
            Daemon {
                mesh: Arc::new(Mesh::new(
                    config.clone(),
                    Tasks::default(),
                    store,
                    me,
                    handler,
                )),
                config,
                started: Instant::now(),
                running_jobs: Arc::default(),
                exe: std::env::current_exe().unwrap_or_else(|_| "d-daemon".into()),
                restart_requested: AtomicBool::new(false),
                audit,
                ledger,
            }
        }))
    }

    pub fn tasks(&self) -> &Tasks {
        &self.mesh.tasks
    }

    /// Cancelled on shutdown.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.mesh.tasks.shutdown
    }

    /// This daemon's id, or a placeholder for messages when unconfigured.
    pub fn me(&self) -> String {
        self.mesh.me.name()
    }

    pub fn running_jobs(&self) -> usize {
        self.running_jobs.load(Ordering::Relaxed)
    }

    /// What every job of this daemon shares.
    pub fn job_ctx(&self) -> JobCtx {
        JobCtx {
            me: self.me(),
            tracker: self.tasks().tracker.clone(),
            running: self.running_jobs.clone(),
            default_dir: self.config.default_dir.clone(),
            output: self.mesh.endpoint.output.clone(),
            ledger: Some(self.ledger.clone()),
        }
    }

    /// Append to the audit log without waiting: the record is queued at
    /// once (so an `execLog` that follows sees it, [`Daemon::audit_flush`])
    /// and written in the background [`audit::WRITE_DELAY`] later, with the
    /// records that came meanwhile; a record the database refuses is kept
    /// and written later ([`audit`]).
    pub fn audit(&self, rec: ExecRecord) {
        self.audit.enqueue(rec);
        if self.audit.make_due() {
            let audit = self.audit.clone();
            self.tasks()
                .tracker
                .spawn(async move { audit.write_due().await });
        }
    }

    /// Write the records queued so far, for a reader that must see every
    /// job already ended (`execLog`). Not tried while the database refuses
    /// records (a held write lock would make the reader wait out the busy
    /// timeout): the reader then sees the rows written before, and
    /// `getPeerStatus` counts the ones waiting.
    pub async fn audit_flush(&self) {
        if !self.audit.failing() {
            self.audit.flush().await;
        }
    }

    /// Shut down (ending jobs and sessions) and re-execute the installed binary.
    pub fn restart(&self) {
        tracing::info!("restarting {}", self.exe.display());
        self.restart_requested.store(true, Ordering::SeqCst);
        self.shutdown().cancel();
    }

    /// Whether a deploy asked for [`Daemon::restart`].
    pub fn restart_requested(&self) -> bool {
        self.restart_requested.load(Ordering::SeqCst)
    }
}
