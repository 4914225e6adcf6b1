//! A client of hubbub's wire protocol: HTTP auth and WebSocket sessions, built
//! on `hubbub::protocol`'s frame types. The integration tests and
//! `hubbub-bench` speak to a real server with it; it is also a starting point
//! for bots. [`hostile`] is the opposite: a client that sends bad frames on
//! purpose and checks each documented answer.
//!
//! - [`http`]: where a server is ([`Endpoint`], plain or TLS), one request per
//!   connection ([`request`]), signing up or logging in ([`Account`]).
//! - [`ws`]: the upgrade ([`connect`], [`join`]) and a session ([`WsClient`]).
//! - [`frames`]: the client's frames, encoded from [`hubbub::protocol::ClientMsg`].

pub mod frames;
pub mod hostile;
pub mod http;
pub mod ws;

/// The wire contract the client is built on (re-exported for bots and the bench).
pub use hubbub::protocol;

pub use http::{Account, Endpoint, HttpResponse, Io, request, signup_or_login};
pub use ws::{ConnectError, Incoming, WsClient, connect, join, join_here, join_multi, route};
