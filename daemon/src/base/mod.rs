//! The bottom layer: pieces every other layer may use, importing none of
//! them. Configuration ([`config`]), this daemon's identity, its key and the mesh key
//! ([`identity`], [`idkey`], [`meshkey`], written by [`private_file`]), the WireGuard interface ([`wg`]), the tasks
//! and shutdown signal everything runs under ([`tasks`]), time ([`clock`])
//! reconnect delays ([`backoff`]), the budget of buffered output ([`budget`]) and the signals the daemon handles or
//! ignores ([`signals`]).

pub mod backoff;
pub mod budget;
pub mod clock;
pub mod config;
pub mod credit;
pub mod identity;
pub mod idkey;
pub mod meshkey;
pub mod private_file;
pub mod signals;
pub mod tasks;
pub mod wg;
