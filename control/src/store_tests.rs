//! The store against openraft's conformance suite, and what survives a restart or damage.
#![allow(clippy::unwrap_used)]

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder, StorageError, Vote,
};

use crate::catalog::{Command, Namespace, Outcome};
use crate::testing::TempDir;
use crate::types::{NodeId, TypeConfig};
use crate::{open_store, LogStore, StateMachine};

struct Builder {
    root: TempDir,
    n: AtomicU64,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine> for Builder {
    async fn build(&self) -> Result<((), LogStore, StateMachine), StorageError<NodeId>> {
        let dir = self.root.path().join(self.n.fetch_add(1, Ordering::Relaxed).to_string());
        let (log, sm) = open_store(&dir).unwrap();
        Ok(((), log, sm))
    }
}

#[test]
fn passes_openraft_conformance_suite() {
    Suite::test_all(Builder { root: TempDir::new("suite"), n: AtomicU64::new(0) }).unwrap();
}

fn log_id(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn record(term: u64, index: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Command::PutRecord {
            namespace: Namespace::Transactions,
            key: format!("k{index}"),
            value: Some(serde_json::json!({ "index": index, "pad": "x".repeat(40) })),
        }),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

async fn indexes(log: &mut LogStore) -> Vec<u64> {
    log.try_get_log_entries(..).await.unwrap().iter().map(|e| e.log_id.index).collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir.join("raft/log")).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

fn reopen_err(dir: &Path) -> String {
    match open_store(dir) {
        Ok(_) => panic!("a damaged store opened"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn log_vote_and_snapshot_survive_a_restart() {
    let dir = TempDir::new("restart");
    rt().block_on(async {
        let (mut log, mut sm) = open_store(dir.path()).unwrap();
        log.blocking_append((0..10).map(|i| record(1, i))).await.unwrap();
        log.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
        log.save_committed(Some(log_id(1, 7))).await.unwrap();
        log.truncate(log_id(1, 8)).await.unwrap();
        log.blocking_append([record(2, 8)]).await.unwrap();
        let applied = sm.apply(log.try_get_log_entries(0..5).await.unwrap()).await.unwrap();
        assert_eq!(applied.len(), 5);
        assert!(applied.iter().all(|o| *o == Outcome::Applied { version: 0 }));
        let snap = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id(1, 4)));
        log.purge(log_id(1, 4)).await.unwrap();
    });
    rt().block_on(async {
        let (mut log, mut sm) = open_store(dir.path()).unwrap();
        assert_eq!(indexes(&mut log).await, vec![5, 6, 7, 8]);
        // Odd ranges answer empty instead of panicking.
        use std::ops::Bound::Excluded;
        assert!(log.try_get_log_entries((Excluded(6), Excluded(6))).await.unwrap().is_empty());
        let (hi, lo) = (8u64, 6u64);
        assert!(log.try_get_log_entries(hi..lo).await.unwrap().is_empty());
        let entries = log.try_get_log_entries(8..9).await.unwrap();
        assert_eq!(entries[0].log_id, log_id(2, 8));
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 4)));
        assert_eq!(state.last_log_id, Some(log_id(2, 8)));
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new_committed(2, 1)));
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 7)));
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(1, 4)));
        let catalog = sm.handle().catalog();
        assert_eq!(catalog.records[&Namespace::Transactions].len(), 5);
        assert!(sm.get_current_snapshot().await.unwrap().is_some());
        log.blocking_append([record(2, 9)]).await.unwrap();
    });
    rt().block_on(async {
        let (mut log, _) = open_store(dir.path()).unwrap();
        assert_eq!(indexes(&mut log).await, vec![5, 6, 7, 8, 9]);
    });
}

#[test]
fn segments_roll_over_and_purge_removes_whole_segments() {
    let dir = TempDir::new("segments");
    rt().block_on(async {
        let (mut log, _) = open_store(dir.path()).unwrap();
        // One append per call: a segment rolls over between appends, not inside one.
        let big = |i: u64| Entry::<TypeConfig> {
            log_id: log_id(1, i),
            payload: EntryPayload::Normal(Command::PutRecord {
                namespace: Namespace::ReshardJobs,
                key: "k".into(),
                value: Some(serde_json::Value::String("y".repeat(3 << 20))),
            }),
        };
        for i in 0..7 {
            log.blocking_append([big(i)]).await.unwrap();
        }
        // 3 MiB entries, 8 MiB segments: a new segment after every third entry.
        assert_eq!(segments(dir.path()).len(), 3);
        log.purge(log_id(1, 3)).await.unwrap();
        assert_eq!(segments(dir.path()).len(), 2, "the first segment (0..=2) is gone");
        assert_eq!(indexes(&mut log).await, vec![4, 5, 6]);
        log.truncate(log_id(1, 5)).await.unwrap();
        log.blocking_append([big(5)]).await.unwrap();
    });
    rt().block_on(async {
        let (mut log, _) = open_store(dir.path()).unwrap();
        assert_eq!(indexes(&mut log).await, vec![4, 5]);
        assert_eq!(log.get_log_state().await.unwrap().last_purged_log_id, Some(log_id(1, 3)));
    });
}

/// Writes entries 0..n (committed up to `committed`) and returns the store's data dir.
fn store_with(dir: &TempDir, n: u64, committed: Option<u64>) -> PathBuf {
    rt().block_on(async {
        let (mut log, _) = open_store(dir.path()).unwrap();
        for i in 0..n {
            log.blocking_append([record(1, i)]).await.unwrap();
        }
        if let Some(c) = committed {
            log.save_committed(Some(log_id(1, c))).await.unwrap();
        }
    });
    dir.path().to_owned()
}

#[test]
fn a_torn_tail_is_cut_off_but_never_a_committed_entry() {
    // A crash in the middle of the last append: the unacknowledged record is dropped.
    let dir = TempDir::new("torn");
    let path = store_with(&dir, 5, Some(3));
    let seg = &segments(&path)[0];
    let len = fs::metadata(seg).unwrap().len();
    OpenOptions::new().write(true).open(seg).unwrap().set_len(len - 7).unwrap();
    rt().block_on(async {
        let (mut log, _) = open_store(&path).unwrap();
        assert_eq!(indexes(&mut log).await, vec![0, 1, 2, 3]);
        log.blocking_append([record(1, 4)]).await.unwrap();
    });
    // Zeroed space after the last record (allocated, never written) is a torn write too.
    let mut bytes = fs::read(seg).unwrap();
    bytes.extend_from_slice(&[0u8; 100]);
    fs::write(seg, &bytes).unwrap();
    rt().block_on(async {
        let (mut log, _) = open_store(&path).unwrap();
        assert_eq!(indexes(&mut log).await, vec![0, 1, 2, 3, 4]);
    });

    // Cutting into committed entries is refused: they were acknowledged.
    let dir = TempDir::new("truncated");
    let path = store_with(&dir, 5, Some(4));
    let seg = &segments(&path)[0];
    let len = fs::metadata(seg).unwrap().len();
    OpenOptions::new().write(true).open(seg).unwrap().set_len(len - 7).unwrap();
    let err = reopen_err(&path);
    assert!(err.contains("the log ends at index 3 but entry 4 was committed"), "{err}");
}

#[test]
fn damage_anywhere_else_is_a_clear_error() {
    // A flipped bit inside an earlier record.
    let dir = TempDir::new("flip");
    let path = store_with(&dir, 5, None);
    let seg = segments(&path)[0].clone();
    let mut bytes = fs::read(&seg).unwrap();
    bytes[20] ^= 0x40;
    fs::write(&seg, &bytes).unwrap();
    let err = reopen_err(&path);
    assert!(err.contains("is corrupt at byte 0: a record's checksum does not match"), "{err}");
    assert!(err.contains(&seg.display().to_string()), "{err}");

    // A missing segment in the middle.
    let dir = TempDir::new("gap");
    let path = store_with(&dir, 3, None);
    let first = segments(&path)[0].clone();
    fs::copy(&first, first.with_file_name(format!("{:020}.seg", 3))).unwrap();
    let err = reopen_err(&path);
    assert!(err.contains("expected entry 3, found 0"), "{err}");
    fs::remove_file(&first).unwrap();
    let err = reopen_err(&path);
    assert!(err.contains("the log needs index 0 next"), "{err}");

    // A damaged vote file.
    let dir = TempDir::new("vote");
    let path = store_with(&dir, 1, None);
    rt().block_on(async {
        let (mut log, _) = open_store(&path).unwrap();
        log.save_vote(&Vote::new(3, 1)).await.unwrap();
    });
    let vote = path.join("raft/vote");
    let bytes = fs::read(&vote).unwrap();
    fs::write(&vote, &bytes[..bytes.len() - 1]).unwrap();
    let err = reopen_err(&path);
    assert!(err.contains("vote is corrupt"), "{err}");
}

#[test]
fn a_crash_between_purge_and_segment_deletion_is_finished_on_open() {
    let dir = TempDir::new("purge-crash");
    let path = store_with(&dir, 4, None);
    let seg = segments(&path)[0].clone();
    let kept = fs::read(&seg).unwrap();
    rt().block_on(async {
        let (mut log, _) = open_store(&path).unwrap();
        log.purge(log_id(1, 10)).await.unwrap();
    });
    assert!(segments(&path).is_empty());
    // Put the segment back as if the deletion never happened.
    fs::write(&seg, &kept).unwrap();
    rt().block_on(async {
        let (mut log, _) = open_store(&path).unwrap();
        assert!(indexes(&mut log).await.is_empty());
        assert!(segments(&path).is_empty(), "the stale segment was removed");
        log.blocking_append([record(2, 11)]).await.unwrap();
    });
    rt().block_on(async {
        let (mut log, _) = open_store(&path).unwrap();
        assert_eq!(indexes(&mut log).await, vec![11]);
    });
}

#[test]
fn apply_publishes_new_versions_to_watchers() {
    let dir = TempDir::new("watch");
    rt().block_on(async {
        let (_, mut sm) = open_store(dir.path()).unwrap();
        let mut rx = sm.handle().subscribe();
        let routing = crate::catalog::tests::routing(&["s0", "s1"]);
        let e = |i: u64, cmd: Command| Entry::<TypeConfig> {
            log_id: log_id(1, i),
            payload: EntryPayload::Normal(cmd),
        };
        let out = sm.apply([e(0, Command::Bootstrap { routing })]).await.unwrap();
        assert_eq!(out, vec![Outcome::Applied { version: 1 }]);
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().version, 1);
        sm.apply([e(1, Command::PutRecord { namespace: Namespace::Sagas, key: "a".into(), value: None })])
            .await
            .unwrap();
        assert!(!rx.has_changed().unwrap(), "records do not bump the routing version");
    });
}
