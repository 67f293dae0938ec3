//! Daemon-to-daemon connections.
pub mod connection;
pub mod port;
pub mod session;
