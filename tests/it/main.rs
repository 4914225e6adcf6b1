//! hubbub's integration tests, as one test binary: each area is a module (the
//! file names of the former one-binary-per-file layout), the shared harness is
//! in [`support`]. One binary links the dependency graph once instead of once
//! per file, and the harness is compiled once, so no helper is dead in some
//! binary and alive in another.
//!
//! All tests share this process, so none may change process-wide state: a
//! test that needs its own environment, working directory or resource limits
//! runs the hubbub binary as a child process (`support::process`, or the
//! `Command`s in `logs`, `security_fds`, `security_small`, `storage_full`)
//! and sets them there. The in-process servers raise only the soft
//! `RLIMIT_NOFILE` to the hard limit (idempotent, harmless to share).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod auth;
mod batch;
mod chat;
mod cluster;
mod cluster_faults;
mod cluster_live;
mod cluster_multi;
mod cluster_presence;
mod cluster_reads;
mod cluster_route;
mod cluster_snapshot;
mod commands;
mod contract_gaps;
mod demo;
mod errors;
mod eviction;
mod frames;
mod fuzz_live;
mod history;
mod history_scan;
mod lingering_close;
mod logs;
mod metrics;
mod multi;
mod privacy;
mod process;
mod prop_parsers;
mod receipts;
mod security_auth;
mod security_fds;
mod security_input;
mod security_limits;
mod security_proxy;
mod security_refresh;
mod security_small;
mod security_tls;
mod sessions;
mod storage_full;
mod unread;
