//! A peer's output as d prints and keeps it: whole lines with the peer's
//! prefix ([`Lines`], the live fan-out and `d jobs show`), and the head and
//! tail the job history keeps ([`Keep`]), and whole outputs kept for the end
//! of a run with bounded memory ([`Spool`]). Used by `fanout`, `exec` and
//! `history`, which import it and not each other's insides.

mod keep;
mod lines;
mod spool;

pub use keep::{print as print_kept, Keep};
pub use lines::Lines;
pub use spool::{JsonDoc, Key, Spool, Store};
