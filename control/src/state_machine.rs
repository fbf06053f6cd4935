//! The state machine: the [`Catalog`] in memory, snapshots on disk, and a watch channel that
//! tells in-process subscribers (the router, the admin API's watch stream) about new versions.
//!
//! Applying does no IO: the applied state is rebuilt on restart from the last snapshot plus the
//! committed log, which openraft re-applies. A snapshot (`<data dir>/raft/snapshot`) is written
//! whole and fsynced before it becomes the current one, so a crash leaves the old or the new.

use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::catalog::{Catalog, Outcome};
use crate::disk;
use crate::types::{NodeId, TypeConfig};

type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// The snapshot as stored on disk and sent to followers.
#[derive(Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    /// JSON of the [`Catalog`].
    data: Vec<u8>,
}

struct Inner {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    catalog: Catalog,
    snapshot: Option<StoredSnapshot>,
    /// Distinguishes snapshots built at the same log id.
    builds: u64,
}

/// The state machine handed to openraft.
pub struct StateMachine {
    shared: Shared,
}

/// Reads the applied catalog and follows its versions; cheap to clone.
#[derive(Clone)]
pub struct CatalogHandle {
    inner: Arc<Mutex<Inner>>,
    versions: watch::Receiver<Arc<Catalog>>,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    path: PathBuf,
    publish: Arc<watch::Sender<Arc<Catalog>>>,
}

/// Builds snapshots for openraft.
pub struct SnapshotBuilder {
    shared: Shared,
}

impl StateMachine {
    /// Opens the state machine in `dir`, starting from the snapshot there if any.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let path = dir.join("snapshot");
        let mut inner = Inner {
            last_applied: None,
            membership: StoredMembership::default(),
            catalog: Catalog::default(),
            snapshot: None,
            builds: 0,
        };
        if let Some(bytes) = disk::read_state_file(&path)? {
            let snap: StoredSnapshot = serde_json::from_slice(&bytes)
                .map_err(|e| disk::corrupt(&path, 0, &format!("cannot decode the snapshot: {e}")))?;
            inner.catalog = serde_json::from_slice(&snap.data).map_err(|e| {
                disk::corrupt(&path, 0, &format!("cannot decode the snapshot's catalog: {e}"))
            })?;
            inner.last_applied = snap.meta.last_log_id;
            inner.membership = snap.meta.last_membership.clone();
            inner.snapshot = Some(snap);
        }
        let (publish, _) = watch::channel(Arc::new(inner.catalog.clone()));
        Ok(Self { shared: Shared { inner: Arc::new(Mutex::new(inner)), path, publish: Arc::new(publish) } })
    }

    /// A handle for reading the catalog and watching its versions.
    #[must_use]
    pub fn handle(&self) -> CatalogHandle {
        CatalogHandle { inner: self.shared.inner.clone(), versions: self.shared.publish.subscribe() }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Tells subscribers about the catalog if its routing version moved.
    fn publish(&self, inner: &Inner) {
        if self.publish.borrow().version != inner.catalog.version {
            self.publish.send_replace(Arc::new(inner.catalog.clone()));
        }
    }
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // Every update under the lock is a plain assignment of already-computed values.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl CatalogHandle {
    /// The catalog as applied on this node now.
    #[must_use]
    pub fn catalog(&self) -> Catalog {
        lock(&self.inner).catalog.clone()
    }

    /// The log id of the last applied entry.
    #[must_use]
    pub fn last_applied(&self) -> Option<LogId<NodeId>> {
        lock(&self.inner).last_applied
    }

    /// A receiver that sees every new routing version (the latest one if several arrive at once).
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<Arc<Catalog>> {
        self.versions.clone()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let snap = {
            let mut inner = self.shared.lock();
            inner.builds += 1;
            let data =
                serde_json::to_vec(&inner.catalog).map_err(|e| StorageIOError::read_state_machine(&e))?;
            let id = match inner.last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id, l.index, inner.builds),
                None => format!("none-{}", inner.builds),
            };
            let meta = SnapshotMeta {
                last_log_id: inner.last_applied,
                last_membership: inner.membership.clone(),
                snapshot_id: id,
            };
            StoredSnapshot { meta, data }
        };
        persist(&self.shared.path, &snap)
            .map_err(|e| StorageIOError::write_snapshot(Some(snap.meta.signature()), &e))?;
        let out = Snapshot { meta: snap.meta.clone(), snapshot: Box::new(Cursor::new(snap.data.clone())) };
        let mut inner = self.shared.lock();
        // Never move the current snapshot backwards (an install may have raced this build).
        if inner.snapshot.as_ref().is_none_or(|s| s.meta.last_log_id <= snap.meta.last_log_id) {
            inner.snapshot = Some(snap);
        }
        Ok(out)
    }
}

fn persist(path: &Path, snap: &StoredSnapshot) -> io::Result<()> {
    disk::write_state_file(path, &serde_json::to_vec(snap).map_err(io::Error::other)?)
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let inner = self.shared.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Outcome>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.shared.lock();
        let mut out = Vec::new();
        for entry in entries {
            inner.last_applied = Some(entry.log_id);
            let outcome = match entry.payload {
                EntryPayload::Blank => Outcome::Unchanged { version: inner.catalog.version },
                EntryPayload::Normal(cmd) => inner.catalog.apply(&cmd),
                EntryPayload::Membership(m) => {
                    inner.membership = StoredMembership::new(Some(entry.log_id), m);
                    Outcome::Unchanged { version: inner.catalog.version }
                }
            };
            out.push(outcome);
        }
        self.shared.publish(&inner);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { shared: self.shared.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let catalog: Catalog = serde_json::from_slice(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let snap = StoredSnapshot { meta: meta.clone(), data };
        persist(&self.shared.path, &snap)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let mut inner = self.shared.lock();
        inner.catalog = catalog;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.snapshot = Some(snap);
        self.shared.publish(&inner);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let inner = self.shared.lock();
        Ok(inner
            .snapshot
            .as_ref()
            .map(|s| Snapshot { meta: s.meta.clone(), snapshot: Box::new(Cursor::new(s.data.clone())) }))
    }
}
