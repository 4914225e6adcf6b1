//! Failures inside the server. None of them is shown to a client: each is
//! logged and answered as `internal` (or `unavailable`) at the edge; the codes
//! a client may see are `protocol::ErrorCode`.

/// Failures inside the server: storage, crypto, I/O. Logged, shown as `internal`.
#[derive(Debug, thiserror::Error)]
pub enum InternalError {
    /// The embedded database failed, as storage classified it (only
    /// `storage` knows which database it is).
    #[error("storage: {0}")]
    Storage(StorageFault),
    /// A stored record could not be decoded (corruption or a format change).
    #[error("decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// A record could not be encoded.
    #[error("encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// Password hashing failed.
    #[error("password hash: {0}")]
    Password(String),
    /// Token signing failed.
    #[error("token: {0}")]
    Token(#[from] jsonwebtoken::errors::Error),
    /// A background task was cancelled or panicked.
    #[error("task: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The hub or storage task is gone (shutting down).
    #[error("component stopped")]
    Stopped,
}

/// A database failure: what kind (decided inside `storage`, the only module
/// that can read the database's errors) and the database's own error.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct StorageFault {
    pub kind: StorageFaultKind,
    source: Box<dyn std::error::Error + Send + Sync>,
}

/// The kinds of database failure the rest of the server acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageFaultKind {
    /// The database's file lock is held by another process (or by a store
    /// of this one not yet dropped): opening may succeed a moment later.
    LockHeld,
    /// Anything else: logged, answered as `internal` or `unavailable`.
    Other,
}

impl StorageFault {
    pub fn new(
        kind: StorageFaultKind,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StorageFault {
            kind,
            source: Box::new(source),
        }
    }
}

impl InternalError {
    /// The database's file lock is held by another process (or a store not yet dropped).
    pub fn is_lock_held(&self) -> bool {
        matches!(self, InternalError::Storage(f) if f.kind == StorageFaultKind::LockHeld)
    }
}
