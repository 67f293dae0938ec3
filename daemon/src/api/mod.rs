//! Requests.
pub mod deploy;
pub mod doctor;
pub mod exec;
