//! Whether storage can take new messages: `Ok`, `Full` (the data directory's
//! filesystem is under the free-space watermark) or `Failed` (sled returned an
//! error; sled 0.34 keeps it, so only a restart recovers).
//!
//! The writer sets the state; the hub reads it before queueing a message and
//! `/readyz` reads it for readiness. One atomic: readers never wait.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum StorageState {
    Ok = 0,
    /// Free space is under `--min-free-mb`: new messages are refused, what is
    /// queued is still written.
    Full = 1,
    /// A write or flush failed: nothing more is written; the server stops.
    Failed = 2,
}

impl StorageState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => StorageState::Ok,
            1 => StorageState::Full,
            _ => StorageState::Failed,
        }
    }
}

/// Shared between the writer (which sets it), the hub and the HTTP edge.
pub struct StorageHealth {
    state: AtomicU8,
    /// Cancelled once, when storage fails: the server runs its shutdown.
    failed: CancellationToken,
    /// The error that failed storage, for the one log line at shutdown.
    /// A std mutex: written once, read once, never held across `.await`.
    reason: Mutex<Option<String>>,
}

impl StorageHealth {
    pub fn new() -> Arc<Self> {
        Arc::new(StorageHealth {
            state: AtomicU8::new(StorageState::Ok as u8),
            failed: CancellationToken::new(),
            reason: Mutex::new(None),
        })
    }

    pub fn state(&self) -> StorageState {
        StorageState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// `Ok` ↔ `Full`; returns whether the state changed. `Failed` is final.
    pub(crate) fn set_full(&self, full: bool) -> bool {
        let (from, to) = if full {
            (StorageState::Ok, StorageState::Full)
        } else {
            (StorageState::Full, StorageState::Ok)
        };
        self.state
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Marks storage failed: new messages are refused from now on. Once; later
    /// calls keep the first reason. `failed()` resolves only after `announce`.
    pub(crate) fn fail(&self, reason: String) {
        let prev = self
            .state
            .swap(StorageState::Failed as u8, Ordering::AcqRel);
        if prev != StorageState::Failed as u8 {
            *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
        }
    }

    /// Tells whoever waits on `failed()` (the server, which then stops). Separate
    /// from `fail` so the writer can first report the failed batch to the hub.
    pub(crate) fn announce(&self) {
        if self.state() == StorageState::Failed {
            self.failed.cancel();
        }
    }

    /// Resolves once storage has failed, with the error that failed it.
    pub async fn failed(&self) -> String {
        self.failed.cancelled().await;
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default()
    }
}

/// Free space (for an unprivileged user) on the filesystem that holds `dir`.
pub fn free_bytes(dir: &Path) -> io::Result<u64> {
    let path = CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `statvfs` is plain old data, so all-zero is a valid value.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `s` a valid, writable
    // `statvfs` that outlives the call.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut s) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    Ok((s.f_bavail as u64).saturating_mul(s.f_frsize as u64))
}

/// The free-space watermark: under `min_free` storage is `Full`; it is `Ok`
/// again only above `resume_at` (a quarter more), so a node near the line does
/// not flap between refusing and accepting.
pub struct SpaceGuard {
    dir: PathBuf,
    min_free: u64,
    resume_at: u64,
}

impl SpaceGuard {
    /// `min_free` 0 turns the guard off.
    pub fn new(dir: PathBuf, min_free: u64) -> Self {
        SpaceGuard {
            dir,
            min_free,
            resume_at: min_free.saturating_add(min_free / 4),
        }
    }

    /// Whether storage should be `Full` now, given whether it is; with the free
    /// bytes seen. `None` when the guard is off or the filesystem cannot be asked
    /// (then the state stays as it is).
    pub fn check(&self, full_now: bool) -> Option<(bool, u64)> {
        if self.min_free == 0 {
            return None;
        }
        match free_bytes(&self.dir) {
            Ok(free) => Some((self.decide(full_now, free), free)),
            Err(e) => {
                tracing::warn!(error = %e, dir = %self.dir.display(), "cannot read free space");
                None
            }
        }
    }

    fn decide(&self, full_now: bool, free: u64) -> bool {
        if full_now {
            free < self.resume_at
        } else {
            free < self.min_free
        }
    }

    pub fn min_free(&self) -> u64 {
        self.min_free
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn watermark_has_hysteresis() {
        let g = SpaceGuard::new(PathBuf::from("."), 1000);
        assert!(!g.decide(false, 1000));
        assert!(g.decide(false, 999));
        assert!(g.decide(true, 1249));
        assert!(!g.decide(true, 1250));
    }

    #[test]
    fn failed_is_final() {
        let h = StorageHealth::new();
        assert!(h.set_full(true));
        assert_eq!(h.state(), StorageState::Full);
        h.fail("boom".into());
        assert!(!h.set_full(false));
        assert_eq!(h.state(), StorageState::Failed);
        h.fail("second".into());
        assert_eq!(h.reason.lock().unwrap().as_deref(), Some("boom"));
        assert!(
            !h.failed.is_cancelled(),
            "announced only after the hub was told"
        );
        h.announce();
        assert!(h.failed.is_cancelled());
    }

    #[test]
    fn free_bytes_of_a_real_directory() {
        assert!(free_bytes(Path::new(".")).is_ok());
        assert!(free_bytes(Path::new("/no/such/dir")).is_err());
    }
}
