//! A peer's output as d prints and keeps it: whole lines with the peer's
//! prefix ([`Lines`], the live fan-out and `d jobs show`), and the head and
//! tail the job history keeps ([`Keep`]). Used by `fanout` and `history`,
//! which import it and not each other's insides.

mod keep;
mod lines;

pub use keep::{print as print_kept, Keep};
pub use lines::Lines;
