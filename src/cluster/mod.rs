//! The cluster: only with `--cluster-listen`. Without it no part of this
//! module runs (no UDP socket, no links, no log) and a node is alone.
//!
//! - `keys`: the cluster secret and the keys derived from it (HKDF).
//! - `gossip`: membership and failure detection (chitchat) behind an
//!   authenticating transport; each node's URL, state and generation.
//! - `link`: one authenticated TLS stream per pair of nodes.
//! - `raft`: the replicated log (openraft): its log and vote in sled trees
//!   of the store's database.

pub mod keys;
pub mod raft;
