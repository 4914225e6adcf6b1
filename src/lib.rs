//! # hubbub
//!
//! A self-contained real-time chat server: WebSocket rooms, private messages,
//! receipts, presence and durable history in embedded sled.
//!
//! # Layout
//!
//! Imports point one way, from the leaves up. Each module below says which
//! others it may import (`crate::…`); `layering_tests` reads this list and
//! fails the build's tests on any edge not on it, and on the rules after it.
//!
//! - [`protocol`]: the wire contract as pure data: names, cursors, frames
//!   (its own `Frame`: shared bytes of UTF-8 JSON), close and error codes.
//!   No I/O. May import: nothing.
//! - [`files`]: a leaf: the private data directory and owner-only files
//!   (keys, the JWT secret). May import: nothing.
//! - [`config`]: the flags and their checks. May import: nothing.
//! - [`error`]: the internal error type (never shown to a client; storage
//!   classifies its own failures into it). May import: nothing.
//! - [`metrics`]: one Prometheus registry per server, typed label values.
//!   May import: `protocol`.
//! - [`storage`]: the only module that names sled. Room logs, the message-id
//!   index and its rule (`ids.rs`), receipts, accounts; the storage writer
//!   task with its bounded write-ahead queue and group commit; storage health
//!   (ok, full under the free-space watermark, failed) for the hub and
//!   `/readyz`. May import: `protocol`, `error`, `metrics`.
//! - [`auth`]: passwords (argon2id), JWTs, refresh-token rotation, on the
//!   account tables. May import: `storage`, `protocol`, `error`, `files`,
//!   `metrics`.
//! - [`tls`]: the local CA (rcgen, or mkcert's), certificate reload, rustls
//!   config, the listener's TLS stream (rustls' unbuffered API: no record
//!   buffer held while idle). May import: `files`, `protocol`.
//! - [`hub`]: one task that owns all room state, used through `HubHandle`'s
//!   typed methods. A pure core (`HubState::apply(event, now) -> Effects`:
//!   no tokio, channels, storage handle or metrics) and a shell that carries
//!   the effects out over bounded queues. May import: `storage`, `protocol`,
//!   `error`, `metrics`.
//! - [`session`]: one WebSocket connection on one task (`conn`): reading
//!   (rate limit, size, parse, commands) and writing (batched writes, pings,
//!   close) in one `select!`. May import: `hub`,
//!   `storage`, `auth`, `protocol`, `metrics`.
//! - [`cluster`]: only with `--cluster-listen`: gossip membership
//!   (chitchat behind an authenticating transport), authenticated node links,
//!   the replicated log, presence digests per room in gossip.
//!   May import: `storage`, `protocol`, `error`, `files`, `metrics`.
//! - [`http`]: the only module that names warp and hyper. Routes, the
//!   upgrade, the accept loop. May import: `session`, `hub`, `auth`,
//!   `storage`, `cluster`, `tls`, `protocol`, `metrics`, `config`.
//! - [`server`]: the composition root and ordered shutdown. May import:
//!   `http`, `session`, `hub`, `auth`, `storage`, `cluster`, `tls`, `files`,
//!   `metrics`, `config`.
//! - [`admin`]: `hubbub user …` against a stopped server's data directory.
//!   May import: `storage`, `protocol`, `config`.
//! - [`demo`]: `hubbub cluster-demo`: three nodes of this binary as child
//!   processes on loopback, one CA, secret and admin token made first.
//!   May import: `tls`, `files`, `config`.
//!
//! Rules beyond the edges, checked the same way:
//! - only `storage` names `sled`; only `http` names `warp`, `hyper`,
//!   `hyper_util` and `http_body_util` (the accept loop, each connection's
//!   limits, the upgrade); only `cluster` names `chitchat` and `openraft`;
//! - only `session` and `http` name `tungstenite` (the socket and the
//!   upgrade); `protocol` names no `tokio`;
//! - `session` and `http` reach storage only through these functions:
//!   `Store::fetch_history` (the one history read: join, the `history` frame,
//!   HTTP), `Store::classify_id` (the message-id rule), `Store::remember_member`,
//!   `Store::was_member`, `Store::mark_read` and `Store::room_list` (read
//!   positions and the room list), `StorageHandle::ack`, `StorageHandle::health`,
//!   `StorageHandle::depth`, and in cluster mode `StorageHandle::propose_read`
//!   and `StorageHandle::propose_member`.
//!
//! The protocol client (`hubbub-client`) and the load generator
//! (`hubbub-bench`) are crates of their own in the workspace (crates/).

pub mod admin;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod error;
pub mod files;
pub mod http;
pub mod hub;
#[cfg(test)]
mod layering_tests;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod session;
pub mod storage;
pub mod tls;
