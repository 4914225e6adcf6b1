//! This node's generation: a number that grows on every start of the same
//! node id, so that peers take a restarted node for a new incarnation (gossip
//! ignores a node whose heartbeat starts again below what it saw).
//!
//! Kept in `DATA_DIR/cluster_generation`; the next one is the larger of the
//! stored value + 1 and the wall clock in milliseconds, so it still grows
//! when the file is lost with a wiped data directory.

use std::path::Path;

use anyhow::Context;

use crate::files;

const FILE: &str = "cluster_generation";

/// Reads, increments and durably stores the generation; returns the new one.
pub fn next(data_dir: &Path) -> anyhow::Result<u64> {
    let path = data_dir.join(FILE);
    let stored = match std::fs::read_to_string(&path) {
        Ok(s) => s
            .trim()
            .parse::<u64>()
            .with_context(|| format!("{} does not hold a number", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let next = stored.saturating_add(1).max(now_ms);
    files::write_private(&path, next.to_string().as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_on_every_start_even_when_the_clock_does_not() {
        let d = tempfile::tempdir().unwrap();
        let a = next(d.path()).unwrap();
        std::fs::write(d.path().join(FILE), (u64::MAX - 10).to_string()).unwrap();
        let b = next(d.path()).unwrap();
        let c = next(d.path()).unwrap();
        assert!(a > 0);
        assert_eq!((b, c), (u64::MAX - 9, u64::MAX - 8));
        std::fs::write(d.path().join(FILE), "junk").unwrap();
        assert!(
            next(d.path()).is_err(),
            "a damaged counter is not silently reset"
        );
    }
}
