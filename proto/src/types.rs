//! Every data type both protocols carry, under one name: code outside this
//! crate imports them from here. Each is defined in the module named for
//! what it holds ([`crate::registry`], [`crate::status`], [`crate::exec`],
//! [`crate::error`], [`crate::b64`]); modules inside the crate import from
//! those, never from here, so the crate's imports run one way.

pub use crate::b64::B64;
pub use crate::error::{ErrorBody, ErrorKind};
pub use crate::exec::{
    Action, CopyOpts, ExecRecord, ExecSpec, ExitInfo, FilesOp, JobSpans, SendTo, Stream, Tty,
};
pub use crate::registry::{InviteInfo, LinkState, PeerInfo, Role};
pub use crate::status::{Check, PeerStatus, WgPeer, WgStatus};
