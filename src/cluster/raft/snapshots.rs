//! The log's snapshots on disk: `DATA_DIR/raft-snapshots/`, created in
//! cluster mode only.
//!
//! - `snap-<index>-<ms>.snap`: the current snapshot (last built or
//!   installed); older ones are removed once a newer one is in place.
//! - `building.tmp`: a snapshot being written; renamed when complete.
//! - `receiving-<n>.tmp`: chunks arriving from the leader (openraft writes
//!   them at their offsets; memory stays one chunk).
//! - `installing.snap`: a received snapshot, checked whole, being imported
//!   into the store. Its presence is the durable "installing" mark: the
//!   import (which is not atomic) is redone at start while it exists, and it
//!   is renamed to `snap-…` only after the import is flushed. A crash at any
//!   point thus leaves the old state (the file was never renamed: `*.tmp`
//!   are removed at start) or the new one (imported again at start).
//!
//! Each file is a storage snapshot (`Store::export_replicated`) whose header
//! is a [`Header`]: openraft's snapshot id and the state machine record.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use openraft::{SnapshotMeta, StorageError, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::fs::File;

use super::state_machine::Applied;
use super::types::{NodeId, NodeInfo, decode, encode};
use crate::storage::{Exported, Store};

pub const DIR: &str = "raft-snapshots";
const BUILDING: &str = "building.tmp";
const INSTALLING: &str = "installing.snap";

/// What a snapshot file says it is.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Header {
    pub id: String,
    pub applied: Applied,
}

impl Header {
    pub fn meta(&self) -> SnapshotMeta<NodeId, NodeInfo> {
        SnapshotMeta {
            last_log_id: self.applied.last,
            last_membership: self.applied.membership.clone(),
            snapshot_id: self.id.clone(),
        }
    }
}

/// The snapshot directory and which file in it is current.
pub struct Snapshots {
    dir: PathBuf,
    current: Option<(PathBuf, Header)>,
    received: u64,
}

fn io_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_snapshot(None, openraft::AnyError::error(e.to_string())).into()
}

/// Makes renames in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl Snapshots {
    /// Opens (creating) the directory under `data_dir`; finishes an install
    /// a crash interrupted (returns its header then), removes partial files
    /// and every snapshot but the newest.
    pub fn open(data_dir: &Path, store: &Store) -> anyhow::Result<(Self, Option<Header>)> {
        let dir = data_dir.join(DIR);
        crate::files::create_private_dir(&dir)?;
        let mut s = Self {
            dir,
            current: None,
            received: 0,
        };
        let installing = s.dir.join(INSTALLING);
        let redone = if installing.exists() {
            tracing::warn!("a snapshot install was interrupted: importing it again");
            let h = store
                .import_replicated(&installing)
                .context("importing an interrupted snapshot install again")?;
            let header: Header = decode(&h)?;
            s.make_current(&installing, header.clone())?;
            Some(header)
        } else {
            None
        };
        let mut snaps = Vec::new();
        for e in std::fs::read_dir(&s.dir)? {
            let path = e?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".tmp") {
                std::fs::remove_file(&path)?;
            } else if name.starts_with("snap-") && name.ends_with(".snap") {
                snaps.push(path);
            }
        }
        // Zero-padded indexes: the greatest name is the newest snapshot.
        snaps.sort();
        if s.current.is_none()
            && let Some(newest) = snaps.last()
        {
            let header: Header = decode(&Store::snapshot_header(newest)?)?;
            s.current = Some((newest.clone(), header));
        }
        for old in snaps {
            if s.current.as_ref().is_none_or(|(p, _)| *p != old) {
                std::fs::remove_file(old)?;
            }
        }
        Ok((s, redone))
    }

    fn file_for(&self, header: &Header) -> PathBuf {
        let index = header.applied.index();
        self.dir.join(format!(
            "snap-{index:020}-{:013}.snap",
            crate::cluster::gossip::transport::wall_ms()
        ))
    }

    /// Renames a complete file to its `snap-…` name (durably) and makes it
    /// current; the previous one is removed.
    fn make_current(&mut self, from: &Path, header: Header) -> std::io::Result<()> {
        let to = self.file_for(&header);
        std::fs::rename(from, &to)?;
        sync_dir(&self.dir)?;
        if let Some((old, _)) = self.current.replace((to, header))
            && let Err(e) = std::fs::remove_file(&old)
        {
            tracing::warn!(file = %old.display(), error = %e, "an old snapshot was not removed");
        }
        Ok(())
    }

    /// Writes the store's replicated state as a new current snapshot. The
    /// caller has stopped applying (the state is that of `header.applied`).
    pub async fn build(
        &mut self,
        store: &Store,
        header: Header,
    ) -> Result<(File, Exported), StorageError<NodeId>> {
        let tmp = self.dir.join(BUILDING);
        let head = encode(&header).map_err(io_err)?;
        let (store, at) = (store.clone(), tmp.clone());
        let exported = tokio::task::spawn_blocking(move || -> anyhow::Result<Exported> {
            let mut f = std::fs::File::create(&at)?;
            let n = store.export_replicated(&mut f, &head)?;
            f.sync_all()?;
            Ok(n)
        })
        .await
        .map_err(io_err)?
        .map_err(io_err)?;
        self.make_current(&tmp, header).map_err(io_err)?;
        Ok((
            self.open_current().await?.ok_or_else(|| io_err("gone"))?.0,
            exported,
        ))
    }

    /// The current snapshot, opened at its start.
    pub async fn open_current(&self) -> Result<Option<(File, Header)>, StorageError<NodeId>> {
        match &self.current {
            None => Ok(None),
            Some((p, h)) => Ok(Some((File::open(p).await.map_err(io_err)?, h.clone()))),
        }
    }

    /// A fresh file for a snapshot the leader is about to send.
    pub async fn receiving(&mut self) -> Result<File, StorageError<NodeId>> {
        self.received += 1;
        let p = self.dir.join(format!("receiving-{}.tmp", self.received));
        File::create(p).await.map_err(io_err)
    }

    /// Installs a received snapshot into `store` (see the module doc for
    /// why a crash at any point is safe). Returns its header and size.
    pub async fn install(
        &mut self,
        store: &Store,
        data: File,
    ) -> Result<(Header, u64), StorageError<NodeId>> {
        data.sync_all().await.map_err(io_err)?;
        let m = data.metadata().await.map_err(io_err)?;
        drop(data);
        let received = self.find_received(m.ino()).map_err(io_err)?;
        let installing = self.dir.join(INSTALLING);
        let (st, at) = (store.clone(), installing.clone());
        let header = tokio::task::spawn_blocking(move || -> anyhow::Result<Header> {
            let header: Header = decode(&Store::check_snapshot(&received)?)?;
            std::fs::rename(&received, &at)?;
            sync_dir(at.parent().unwrap_or(Path::new(".")))?;
            // From here on the install is redone at start until renamed below.
            st.import_replicated(&at)?;
            Ok(header)
        })
        .await
        .map_err(io_err)?
        .map_err(io_err)?;
        self.make_current(&installing, header.clone())
            .map_err(io_err)?;
        self.remove_received();
        Ok((header, m.len()))
    }

    /// The receiving file with inode `ino` (openraft hands back the file, not its name).
    fn find_received(&self, ino: u64) -> std::io::Result<PathBuf> {
        for e in std::fs::read_dir(&self.dir)? {
            let e = e?;
            let name = e.file_name();
            if name.to_string_lossy().starts_with("receiving-") && e.metadata()?.ino() == ino {
                return Ok(e.path());
            }
        }
        Err(std::io::Error::other("the received snapshot file is gone"))
    }

    /// Partial receptions (another snapshot's chunks, abandoned).
    fn remove_received(&self) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("receiving-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

#[cfg(test)]
#[path = "snapshots_tests.rs"]
mod tests;
