//! The mesh.
pub mod leader;
pub mod link;
