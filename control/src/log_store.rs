//! The Raft log and vote on local disk: segment files written by one IO thread.
//!
//! Layout of `<data dir>/raft/`:
//!
//! | file | holds |
//! |---|---|
//! | `log/<first index, 20 digits>.seg` | consecutive entries, one framed JSON record each ([`crate::disk`]) |
//! | `vote` | the last vote, replaced whole |
//! | `committed` | the last committed log id known to this node, replaced whole |
//! | `purged` | the last purged log id (entries up to it may be gone), replaced whole |
//!
//! Every write is fsynced before it is acknowledged: [`RaftLogStorage::append`] reports the
//! flush through openraft's callback after `fdatasync`, and the vote, purge and truncate calls
//! return only once durable. All disk IO runs on one dedicated thread, in order, so a slow disk
//! never blocks the async runtime that also serves clients, and writes are never reordered.
//! Entries are also kept in memory (the metadata log is small and snapshots purge it), which is
//! where reads are served from.
//!
//! Recovery on open reads every segment. Damage that reaches the end of the newest segment is a
//! torn write (an append that was never acknowledged) and is cut off with a warning; any other
//! damage, a gap between segments, a missing first segment, or a log that ends before the
//! recorded commit point is refused with an error naming the file: acknowledged data is never
//! silently dropped. After the first IO error the store fails every later write (fail-stop), so
//! openraft shuts the node down instead of running on a log in an unknown state.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use tokio::sync::oneshot;

use crate::disk::{self, Record};
use crate::types::{NodeId, TypeConfig};

/// Segments roll over once they pass this size.
const SEGMENT_BYTES: u64 = 8 << 20;

type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// What readers see: the entries and the small state, in memory.
#[derive(Default)]
struct LogMem {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    last_purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
}

/// The log store handed to openraft.
pub struct LogStore {
    mem: Arc<Mutex<LogMem>>,
    io: mpsc::Sender<IoOp>,
}

/// A reader sharing the store's memory (openraft's replication tasks use these).
#[derive(Clone)]
pub struct LogReader {
    mem: Arc<Mutex<LogMem>>,
}

enum IoOp {
    Append { first: u64, bytes: Vec<u8>, lens: Vec<u64>, done: LogFlushed<TypeConfig> },
    Truncate { since: u64, done: oneshot::Sender<io::Result<()>> },
    Purge { upto: u64, state: Vec<u8>, done: oneshot::Sender<io::Result<()>> },
    State { file: &'static str, state: Vec<u8>, done: oneshot::Sender<io::Result<()>> },
}

impl LogStore {
    /// Opens (creating if needed) the log under `dir`, recovering what is on disk.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let log_dir = dir.join("log");
        fs::create_dir_all(&log_dir)?;
        let vote = read_json::<Vote<NodeId>>(&dir.join("vote"))?;
        let committed = read_json::<LogId<NodeId>>(&dir.join("committed"))?;
        let last_purged = read_json::<LogId<NodeId>>(&dir.join("purged"))?;
        let (entries, writer) = Writer::recover(dir, &log_dir, last_purged.map(|p| p.index))?;
        if let Some(c) = committed {
            let last = entries.keys().next_back().copied().or(last_purged.map(|p| p.index));
            if last.is_none_or(|l| l < c.index) {
                return Err(disk::corrupt(
                    &log_dir,
                    0,
                    &format!(
                        "the log ends at index {} but entry {} was committed: log files were truncated or removed",
                        last.map_or_else(|| "(none)".to_owned(), |l| l.to_string()),
                        c.index
                    ),
                ));
            }
        }
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new().name("control-log-io".into()).spawn(move || writer.run(rx))?;
        let mem = LogMem { entries, last_purged, vote, committed };
        Ok(Self { mem: Arc::new(Mutex::new(mem)), io: tx })
    }

    fn mem(&self) -> MutexGuard<'_, LogMem> {
        lock(&self.mem)
    }

    /// Sends `op` to the IO thread and waits for it to be durable.
    async fn io(&self, op: impl FnOnce(oneshot::Sender<io::Result<()>>) -> IoOp) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.io.send(op(tx)).map_err(|_| io::Error::other("the log IO thread has stopped"))?;
        rx.await.map_err(|_| io::Error::other("the log IO thread has stopped"))?
    }
}

fn lock(m: &Mutex<LogMem>) -> MutexGuard<'_, LogMem> {
    // A panic while holding the lock cannot leave LogMem half-updated in a way readers could
    // misread (every update is a single insert/remove/assign), so recover the guard.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match disk::read_state_file(path)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| disk::corrupt(path, 0, &format!("cannot decode: {e}"))),
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(io::Error::other)
}

fn read_entries(mem: &Mutex<LogMem>, range: impl RangeBounds<u64>) -> Vec<Entry<TypeConfig>> {
    let start = match range.start_bound() {
        Bound::Included(&s) => Bound::Included(s),
        Bound::Excluded(&s) => Bound::Excluded(s),
        Bound::Unbounded => Bound::Unbounded,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => Bound::Included(e),
        Bound::Excluded(&e) => Bound::Excluded(e),
        Bound::Unbounded => Bound::Unbounded,
    };
    // BTreeMap::range panics on an inverted range or on (x, x) with both ends excluded.
    if let (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) = (start, end) {
        if s > e || (s == e && matches!((start, end), (Bound::Excluded(_), Bound::Excluded(_)))) {
            return Vec::new();
        }
    }
    lock(mem).entries.range((start, end)).map(|(_, e)| e.clone()).collect()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        Ok(read_entries(&self.mem, range))
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        Ok(read_entries(&self.mem, range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let mem = self.mem();
        let last = mem.entries.values().next_back().map(|e| e.log_id).or(mem.last_purged);
        Ok(LogState { last_purged_log_id: mem.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader { mem: self.mem.clone() }
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        let state = to_json(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        self.io(|done| IoOp::State { file: "vote", state, done })
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        self.mem().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        Ok(self.mem().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        let Some(c) = committed else { return Ok(()) };
        let state = to_json(&c).map_err(|e| StorageIOError::write(&e))?;
        self.io(|done| IoOp::State { file: "committed", state, done })
            .await
            .map_err(|e| StorageIOError::write(&e))?;
        self.mem().committed = Some(c);
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self.mem().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut bytes = Vec::new();
        let mut lens = Vec::new();
        let mut first = None;
        let mut batch = Vec::new();
        for entry in entries {
            let payload = serde_json::to_vec(&entry).map_err(|e| StorageIOError::write_logs(&e))?;
            let before = bytes.len();
            disk::frame(&payload, &mut bytes);
            lens.push((bytes.len() - before) as u64);
            first.get_or_insert(entry.log_id.index);
            batch.push(entry);
        }
        let Some(first) = first else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        {
            let mut mem = self.mem();
            for e in batch {
                mem.entries.insert(e.log_id.index, e);
            }
        }
        // Visible to readers now, acknowledged as flushed by the IO thread after fsync.
        self.io
            .send(IoOp::Append { first, bytes, lens, done: callback })
            .map_err(|_| StorageIOError::write_logs(AnyError::error("the log IO thread has stopped")))?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let since = log_id.index;
        self.mem().entries.split_off(&since);
        self.io(|done| IoOp::Truncate { since, done }).await.map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let state = to_json(&log_id).map_err(|e| StorageIOError::write_logs(&e))?;
        self.io(|done| IoOp::Purge { upto: log_id.index, state, done })
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        let mut mem = self.mem();
        mem.last_purged = Some(log_id);
        let keep = mem.entries.split_off(&(log_id.index + 1));
        mem.entries = keep;
        Ok(())
    }
}

/// One segment file on disk.
struct Segment {
    path: PathBuf,
    /// Index of the first entry in it.
    first: u64,
    /// Index of the last entry in it.
    last: u64,
    len: u64,
}

/// The IO thread's view of the files.
struct Writer {
    dir: PathBuf,
    log_dir: PathBuf,
    /// By first index; the last one is where appends go.
    segments: BTreeMap<u64, Segment>,
    /// Entry index → (segment first index, byte offset), for truncation.
    offsets: BTreeMap<u64, (u64, u64)>,
    active: Option<File>,
    failed: Option<String>,
}

fn segment_path(log_dir: &Path, first: u64) -> PathBuf {
    log_dir.join(format!("{first:020}.seg"))
}

impl Writer {
    /// Reads every segment, cuts a torn tail, and refuses any other damage.
    fn recover(
        dir: &Path,
        log_dir: &Path,
        purged: Option<u64>,
    ) -> io::Result<(BTreeMap<u64, Entry<TypeConfig>>, Writer)> {
        let mut names = Vec::new();
        for f in fs::read_dir(log_dir)? {
            let path = f?.path();
            let first = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok());
            match first {
                Some(first) => names.push((first, path)),
                None if path.extension().is_some_and(|e| e == "tmp") => fs::remove_file(&path)?,
                None => return Err(disk::corrupt(&path, 0, "not a log segment (expected <index>.seg)")),
            }
        }
        names.sort();
        let mut entries = BTreeMap::new();
        let mut segments = BTreeMap::new();
        let mut offsets = BTreeMap::new();
        let count = names.len();
        // The log must cover purged+1.. without gaps; entries at or below the purge point may
        // linger in a segment whose deletion a crash interrupted.
        let mut next: Option<u64> = None;
        for (n, (first, path)) in names.into_iter().enumerate() {
            let newest = n + 1 == count;
            let need = next.unwrap_or(0).max(purged.map_or(0, |p| p + 1));
            if first > need || next.is_some_and(|e| first < e) {
                return Err(disk::corrupt(
                    &path,
                    0,
                    &format!(
                        "segment starts at index {first} but the log needs index {need} next \
                         (purged up to {}): a segment is missing or overlaps another",
                        purged.map_or_else(|| "(none)".to_owned(), |p| p.to_string())
                    ),
                ));
            }
            let buf = fs::read(&path)?;
            let mut at = 0;
            let mut index = first;
            loop {
                match disk::next_record(&buf, at) {
                    Record::Whole { payload, end } => {
                        let entry: Entry<TypeConfig> = serde_json::from_slice(payload)
                            .map_err(|e| disk::corrupt(&path, at, &format!("cannot decode an entry: {e}")))?;
                        if entry.log_id.index != index {
                            return Err(disk::corrupt(
                                &path,
                                at,
                                &format!("expected entry {index}, found {}", entry.log_id.index),
                            ));
                        }
                        offsets.insert(index, (first, at as u64));
                        if purged.is_none_or(|p| index > p) {
                            entries.insert(index, entry);
                        }
                        index += 1;
                        at = end;
                    }
                    Record::End => break,
                    Record::Damaged(why) => {
                        if !newest || !is_torn_tail(&buf, at) {
                            return Err(disk::corrupt(&path, at, why));
                        }
                        tracing::warn!(
                            segment = %path.display(),
                            offset = at,
                            "cutting off a torn write at the end of the log ({why}); it was never acknowledged"
                        );
                        let f = OpenOptions::new().write(true).open(&path)?;
                        f.set_len(at as u64)?;
                        f.sync_all()?;
                        break;
                    }
                }
            }
            next = Some(index);
            if index == first || purged.is_some_and(|p| index - 1 <= p) {
                // No live entry: a newest segment whose first append tore, or a segment whose
                // purge a crash interrupted. Finish the job.
                fs::remove_file(&path)?;
                disk::sync_dir(log_dir)?;
                offsets.retain(|_, (f, _)| *f != first);
                continue;
            }
            segments.insert(first, Segment { path, first, last: index - 1, len: at as u64 });
        }
        let active = match segments.values().next_back() {
            Some(s) => Some(OpenOptions::new().append(true).open(&s.path)?),
            None => None,
        };
        let writer = Writer {
            dir: dir.to_owned(),
            log_dir: log_dir.to_owned(),
            segments,
            offsets,
            active,
            failed: None,
        };
        Ok((entries, writer))
    }

    fn run(mut self, rx: mpsc::Receiver<IoOp>) {
        while let Ok(op) = rx.recv() {
            match op {
                IoOp::Append { first, bytes, lens, done } => {
                    let r = self.guard(|w| w.append(first, &bytes, &lens));
                    done.log_io_completed(r);
                }
                IoOp::Truncate { since, done } => {
                    let _ = done.send(self.guard(|w| w.truncate(since)));
                }
                IoOp::Purge { upto, state, done } => {
                    let _ = done.send(self.guard(|w| w.purge(upto, &state)));
                }
                IoOp::State { file, state, done } => {
                    let path = self.dir.join(file);
                    let _ = done.send(self.guard(|_| disk::write_state_file(&path, &state)));
                }
            }
        }
    }

    /// Runs `f` unless an earlier write failed; a failure makes every later write fail too.
    fn guard(&mut self, f: impl FnOnce(&mut Self) -> io::Result<()>) -> io::Result<()> {
        if let Some(why) = &self.failed {
            return Err(io::Error::other(format!("the control log stopped after an earlier error: {why}")));
        }
        let r = f(self);
        if let Err(e) = &r {
            tracing::error!(error = %e, "control log write failed; the store refuses further writes");
            self.failed = Some(e.to_string());
        }
        r
    }

    fn append(&mut self, first: u64, bytes: &[u8], lens: &[u64]) -> io::Result<()> {
        let roll = match self.segments.values().next_back() {
            None => true,
            Some(s) => s.len >= SEGMENT_BYTES,
        };
        if roll || self.active.is_none() {
            let path = segment_path(&self.log_dir, first);
            let file = OpenOptions::new().append(true).create_new(true).open(&path)?;
            disk::sync_dir(&self.log_dir)?;
            self.segments.insert(first, Segment { path, first, last: first, len: 0 });
            self.active = Some(file);
        }
        let (Some(file), Some(seg)) = (self.active.as_mut(), self.segments.values_mut().next_back()) else {
            return Err(io::Error::other("no active log segment"));
        };
        if seg.len > 0 && first != seg.last + 1 {
            return Err(io::Error::other(format!(
                "append at index {first} does not follow the log's last entry {}",
                seg.last
            )));
        }
        file.write_all(bytes)?;
        file.sync_data()?;
        let mut offset = seg.len;
        for (i, len) in lens.iter().enumerate() {
            self.offsets.insert(first + i as u64, (seg.first, offset));
            offset += len;
        }
        seg.len = offset;
        seg.last = first + lens.len() as u64 - 1;
        Ok(())
    }

    fn truncate(&mut self, since: u64) -> io::Result<()> {
        self.active = None;
        let doomed: Vec<u64> = self.segments.range(since..).map(|(f, _)| *f).collect();
        for first in &doomed {
            if let Some(s) = self.segments.remove(first) {
                fs::remove_file(&s.path)?;
            }
        }
        if !doomed.is_empty() {
            disk::sync_dir(&self.log_dir)?;
        }
        if let Some(&(seg_first, offset)) = self.offsets.get(&since) {
            if let Some(seg) = self.segments.get_mut(&seg_first) {
                let f = OpenOptions::new().write(true).open(&seg.path)?;
                f.set_len(offset)?;
                f.sync_all()?;
                seg.len = offset;
                seg.last = since - 1;
            }
        }
        self.offsets.split_off(&since);
        if let Some(s) = self.segments.values().next_back() {
            self.active = Some(OpenOptions::new().append(true).open(&s.path)?);
        }
        Ok(())
    }

    fn purge(&mut self, upto: u64, state: &[u8]) -> io::Result<()> {
        disk::write_state_file(&self.dir.join("purged"), state)?;
        let doomed: Vec<u64> = self.segments.values().filter(|s| s.last <= upto).map(|s| s.first).collect();
        let newest = self.segments.keys().next_back().copied();
        for first in &doomed {
            if Some(*first) == newest {
                self.active = None;
            }
            if let Some(s) = self.segments.remove(first) {
                fs::remove_file(&s.path)?;
            }
        }
        if !doomed.is_empty() {
            disk::sync_dir(&self.log_dir)?;
        }
        let keep = self.offsets.split_off(&(upto + 1));
        self.offsets = keep;
        Ok(())
    }
}

/// Damage at `at` is a torn write if nothing intact follows it: the record runs past the end
/// of the file, or everything from `at` on is zeros (space the filesystem allocated but the
/// crash kept from being written), or the damaged record is the last thing in the file.
fn is_torn_tail(buf: &[u8], at: usize) -> bool {
    let rest = &buf[at..];
    if rest.iter().all(|b| *b == 0) || rest.len() < 8 {
        return true;
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    8 + len >= rest.len()
}
