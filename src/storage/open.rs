//! How the sled database is opened: cache size and log segment size.
//!
//! sled fixes two settings per data directory when it creates it (its `conf`
//! file): `use_compression` and `segment_size`, and refuses to open a
//! directory with other values. So the segment size applies to NEW data
//! directories only; an existing one is opened with the values it was created
//! with (read from its `conf`), and a flag that asks otherwise is logged, not
//! an error: a server upgraded with new defaults must still start on its old
//! data. (sled's zstd `compression` feature cannot be built here: it needs
//! zstd 0.9, whose zstd-sys `links = "zstd"` clashes with chitchat's zstd 0.13.)

use std::path::Path;

/// sled's default segment size (its log is written in segments of this size).
pub const DEFAULT_SEGMENT_BYTES: usize = 512 << 10;

/// How to open the database.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// sled's page cache, bytes.
    pub cache_bytes: u64,
    /// Log segment size, bytes (a power of two, 256 B–16 MiB): only for a new
    /// data directory.
    pub segment_bytes: usize,
}

impl StoreOptions {
    pub fn with_cache(cache_bytes: u64) -> Self {
        StoreOptions {
            cache_bytes,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
        }
    }
}

/// What sled recorded when it created a data directory.
#[derive(Debug, PartialEq)]
struct Persisted {
    use_compression: bool,
    segment_size: usize,
}

/// Reads sled's `conf` file (`key: value` lines, then a 4-byte CRC) if the
/// directory has one. A file without both keys reads as absent: sled then
/// checks (and reports) it itself.
fn persisted(dir: &Path) -> Option<Persisted> {
    let bytes = std::fs::read(dir.join("conf")).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let mut use_compression = None;
    let mut segment_size = None;
    for line in text.lines() {
        match line.split_once(':') {
            Some(("use_compression", v)) => use_compression = v.trim().parse().ok(),
            Some(("segment_size", v)) => segment_size = v.trim().parse().ok(),
            _ => {}
        }
    }
    Some(Persisted {
        use_compression: use_compression?,
        segment_size: segment_size?,
    })
}

/// sled's config for `dir`: the options asked for, except what an existing
/// directory already fixed.
pub(super) fn sled_config(dir: &Path, o: &StoreOptions) -> sled::Config {
    let mut compress = false;
    let mut segment = o.segment_bytes;
    if let Some(p) = persisted(dir) {
        if p.segment_size != segment {
            tracing::warn!(
                dir = %dir.display(),
                segment_bytes = p.segment_size,
                asked = segment,
                "this data directory was created with another segment size and keeps it \
                 (the flag only applies to a new data directory)"
            );
        }
        compress = p.use_compression;
        segment = p.segment_size;
    }
    sled::Config::new()
        .path(dir)
        .cache_capacity(o.cache_bytes)
        // We group-commit ourselves: nothing is acknowledged before our own flush.
        .flush_every_ms(None)
        .mode(sled::Mode::LowSpace)
        // As created (always false for directories hubbub makes): sled refuses a change.
        .use_compression(compress)
        // sled marks this setter as meant for tests, but it is the plain
        // field its `conf` records and checks; hubbub validates the range.
        .segment_size(segment)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use uuid::Uuid;

    use super::*;
    use crate::protocol::{Cursor, MsgKind, PageDir, RoomName, StoredMsg, Username};
    use crate::storage::{StorageCmd, Store};

    fn post(seq: u64) -> StorageCmd {
        StorageCmd::Append(
            Arc::new(StoredMsg {
                id: Uuid::new_v4(),
                kind: MsgKind::Chat,
                room: RoomName::parse("lobby").unwrap(),
                sender: Username::parse("alice").unwrap(),
                target: None,
                content: format!("m{seq}"),
                action: false,
                ts_ms: 7,
                cursor: Cursor { ms: 7, seq },
            }),
            Instant::now(),
        )
    }

    /// A data directory made with sled's default segment size (every
    /// directory before `--store-segment-kb`) opens, with its messages, under
    /// a server started with another size; a new directory takes the flag's.
    #[test]
    fn an_existing_dir_keeps_its_segment_size() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("db");
        {
            let store = Store::open(&path, 1 << 20).unwrap();
            store.apply_replicated(&[post(1), post(2)]).unwrap();
            store.inner.db.flush().unwrap();
        }
        let bigger = StoreOptions {
            cache_bytes: 1 << 20,
            segment_bytes: 4 << 20,
        };
        let store = Store::open_with(&path, &bigger).unwrap();
        let (room, viewer) = (
            RoomName::parse("lobby").unwrap(),
            Username::parse("bob").unwrap(),
        );
        let page = store
            .page(&room, &viewer, PageDir::Latest, 10, None, &[])
            .unwrap();
        let got: Vec<&str> = page.msgs.iter().map(|(m, _)| m.content.as_str()).collect();
        assert_eq!(got, ["m1", "m2"]);
        drop(store);
        assert_eq!(
            persisted(&path).unwrap().segment_size,
            DEFAULT_SEGMENT_BYTES
        );

        let fresh = d.path().join("db2");
        drop(Store::open_with(&fresh, &bigger).unwrap());
        assert_eq!(persisted(&fresh).unwrap().segment_size, 4 << 20);
    }

    #[test]
    fn reads_sleds_conf() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(persisted(d.path()), None);
        std::fs::write(
            d.path().join("conf"),
            "segment_size: 1048576\nuse_compression: true\nversion: 0.34\n",
        )
        .unwrap();
        assert_eq!(
            persisted(d.path()),
            Some(Persisted {
                use_compression: true,
                segment_size: 1 << 20
            })
        );
    }
}
