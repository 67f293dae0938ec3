//! Leaf pieces every layer may use.
pub mod backoff;
pub mod config;
pub mod meshkey;
pub mod wg;
