//! A small, fixed set of threads for argon2 hashing.
//!
//! Each argon2id hash allocates 19 MiB. On tokio's blocking pool (measured:
//! 27 MB RSS after 1 log-in, 787 MB after 40, 1.08 GB after 240) memory grew
//! with every new thread's malloc arena, and even on one thread glibc's
//! dynamic mmap threshold keeps freed 19 MiB blocks in the heap, fragmented
//! (a 2-thread pool alone: 205 MB after 10 log-ins). So: a fixed number of
//! threads (a login flood queues instead of running 512 hashes at once), and
//! a fixed mmap threshold so every such block goes back to the kernel when
//! freed (measured with both: RSS flat after any number of log-ins).

use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::error::InternalError;

type Job = Box<dyn FnOnce() + Send>;

#[derive(Clone)]
pub struct HashPool {
    jobs: std_mpsc::SyncSender<Job>,
}

/// Jobs waiting for a thread: beyond this, callers wait (async) for a place.
const QUEUE: usize = 256;

impl HashPool {
    pub fn new(threads: usize) -> Result<Self, InternalError> {
        return_large_blocks_to_the_kernel();
        let (jobs, rx) = std_mpsc::sync_channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("hubbub-argon2-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while taking a job, never while hashing.
                        let job = match rx.lock() {
                            Ok(guard) => guard.recv(),
                            Err(poisoned) => poisoned.into_inner().recv(),
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => break, // every HashPool handle is gone
                        }
                    }
                })
                .map_err(|e| InternalError::Password(format!("spawning a hashing thread: {e}")))?;
        }
        Ok(HashPool { jobs })
    }

    /// Runs `f` on a hashing thread and returns its result.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, InternalError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        let jobs = self.jobs.clone();
        // `send` blocks only while the queue is full: do that wait off the async workers.
        tokio::task::spawn_blocking(move || jobs.send(job))
            .await?
            .map_err(|_| InternalError::Stopped)?;
        rx.await.map_err(|_| InternalError::Stopped)
    }
}

/// Makes glibc serve allocations of 1 MiB and more with mmap, always (a
/// fixed threshold turns off the dynamic one), so they are unmapped on free.
/// Process-wide and idempotent; a no-op elsewhere than glibc.
fn return_large_blocks_to_the_kernel() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator tuning parameter; it is safe to
    // call at any time, from any thread, any number of times.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_on_its_threads() {
        let pool = HashPool::new(2).unwrap();
        let names: Vec<String> =
            futures_util::future::join_all((0..8).map(|_| {
                pool.run(|| std::thread::current().name().unwrap_or_default().to_owned())
            }))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert!(
            names.iter().all(|n| n.starts_with("hubbub-argon2-")),
            "{names:?}"
        );
    }
}
