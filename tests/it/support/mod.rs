//! Test harness, by concern: a real server in this process ([`server`]),
//! WebSocket frames ([`frames`]), HTTP and raw sockets ([`http`]), the binary
//! as a child process ([`process`]), a cluster of them ([`cluster`]). No mocks: everything goes over real
//! sockets. The test modules take it all with `use crate::support::*`.

mod cluster;
mod frames;
mod http;
pub mod netns;
mod process;
mod server;

pub use cluster::*;
pub use frames::*;
pub use http::*;
pub use hubbub_client::{HttpResponse, Incoming};
pub use process::*;
pub use server::*;
