//! # hubbub
//!
//! A self-contained real-time chat server: WebSocket rooms, private messages,
//! receipts, presence and durable history in embedded sled.
//!
//! # Layout
//!
//! Imports point one way, from the leaves up:
//!
//! - [`protocol`]: the wire contract as pure data: names, cursors, frames. No I/O.
//! - [`storage`]: the only module that imports sled. Room logs, the message-id
//!   index, receipts, accounts; the storage writer task with its bounded
//!   write-ahead queue and group commit; storage health (ok, full under the
//!   free-space watermark, failed) for the hub and `/readyz`. Imports `protocol`.
//! - [`auth`]: passwords (argon2id), JWTs, refresh-token rotation. Imports
//!   `storage` for the account tables.
//! - [`hub`]: one task that owns all room state, used through `HubHandle`'s
//!   typed methods. A pure core (`HubState::apply(event, now) -> Effects`,
//!   no tokio, channels, storage handle or metrics) and a shell that carries
//!   the effects out over bounded queues. Imports `protocol`, `storage`,
//!   `metrics`.
//! - [`session`]: one WebSocket connection: reader (rate limit, size, parse,
//!   commands) and writer (batched writes, pings, close). Imports `hub`.
//! - [`http`]: the only module that imports warp. Routes, the upgrade, the
//!   accept loop. Imports `session`, `auth`.
//! - [`server`]: the composition root and ordered shutdown.
//! - [`tls`]: the local CA (rcgen, or mkcert's), certificate reload, rustls
//!   config. Imports `files`.
//! - [`files`]: a leaf: the private data directory and owner-only files
//!   (keys, the JWT secret). Used by `auth`, `tls` and `server`.
//! - [`admin`]: `hubbub user …` against a stopped server's data directory.
//! - [`config`], [`error`]: used anywhere.
//! - [`client`]: a small Rust client of the wire protocol, used by the tests
//!   and the load generator.
//! - [`hostile`]: a client that sends bad frames by hand and checks each
//!   documented answer (fuzzing over real sockets; tests and the load generator).

pub mod admin;
pub mod auth;
pub mod client;
pub mod config;
pub mod error;
pub mod files;
pub mod hostile;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod session;
pub mod storage;
pub mod tls;
