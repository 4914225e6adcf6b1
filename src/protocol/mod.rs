//! The wire contract as types: names, cursors, stored messages and frames.
//! Pure data: no tokio, no I/O. Everything else builds on this module.

pub mod close;
pub mod error_code;
pub mod frames;
pub mod message;
pub mod names;
pub mod relay;
pub mod time;

pub use close::CloseCode;
pub use error_code::ErrorCode;
pub use frames::{ClientMsg, Frame, FrameError, PageDir, ServerMsg, WireMsg};
pub use message::{Cursor, MsgKind, Status, StoredMsg};
pub use names::{ClientId, RoomName, Username};
pub use relay::{PeerPresence, Relay};
