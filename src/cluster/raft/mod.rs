//! The replicated log (openraft 0.9, storage-v2): its entries and vote in
//! trees of the store's own database, so that one flush covers the log and
//! the state machine.
//!
//! - `log_store`: openraft's log storage on `storage`'s byte-level log.
//! - `types`: the entries (batches of posts and acks) and node names.
//! - `state_machine`: hubbub's store as the state machine.
//! - `handover`: a leader that shuts down hands leadership to a follower.
//! - `snapshots`: the state machine's snapshots on disk (`DATA_DIR/raft-snapshots/`).

pub mod handover;
mod log_store;
pub mod network;
pub mod node;
#[cfg(test)]
mod restart_tests;
mod snapshots;
pub mod state_machine;
#[cfg(test)]
mod test_sm;
pub mod types;

pub use log_store::LogStore;
