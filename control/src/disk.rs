//! On-disk framing shared by the log segments and the small state files.
//!
//! A record is `len: u32 LE | crc32(payload): u32 LE | payload`. A reader tells three cases
//! apart: a whole record, a clean end of file, and a damaged record (short header, short payload,
//! or a checksum mismatch). Whether damage is a torn write to forgive or corruption to refuse is
//! the caller's decision: only the very end of the newest log segment can hold a write that was
//! never acknowledged.
//!
//! Small state files (vote, purge point, snapshot) are replaced whole: write a temporary file,
//! fsync it, rename it over the old one, fsync the directory. After a crash the file is either
//! the old or the new version, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The largest record accepted; a length above it is damage, not an allocation request.
pub const MAX_RECORD: usize = 64 << 20;

const HEADER: usize = 8;

/// Appends one framed record to `out`.
pub fn frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// What [`next_record`] found at an offset.
#[derive(Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// A whole record and the offset just past it.
    Whole { payload: &'a [u8], end: usize },
    /// Nothing left.
    End,
    /// Bytes that are not a whole, intact record.
    Damaged(&'static str),
}

/// Decodes the record at `at` in `buf`.
#[must_use]
pub fn next_record(buf: &[u8], at: usize) -> Record<'_> {
    let rest = &buf[at.min(buf.len())..];
    if rest.is_empty() {
        return Record::End;
    }
    if rest.len() < HEADER {
        return Record::Damaged("a record header is cut short");
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    if len == 0 {
        // Never written (every payload is non-empty): zeroed space the filesystem allocated.
        return Record::Damaged("a zero-length record");
    }
    if len > MAX_RECORD {
        return Record::Damaged("a record length is out of range");
    }
    if rest.len() < HEADER + len {
        return Record::Damaged("a record is cut short");
    }
    let payload = &rest[HEADER..HEADER + len];
    if crc32fast::hash(payload) != crc {
        return Record::Damaged("a record's checksum does not match");
    }
    Record::Whole { payload, end: at + HEADER + len }
}

/// fsyncs a directory so that creations, renames and deletions in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Atomically replaces `path` with one framed record holding `payload`.
pub fn write_state_file(path: &Path, payload: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    let mut buf = Vec::with_capacity(payload.len() + HEADER);
    frame(payload, &mut buf);
    {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
        f.write_all(&buf)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or_else(|| Path::new(".")))
}

/// Reads a file written by [`write_state_file`]: `Ok(None)` if it does not exist, an
/// `InvalidData` error naming the file if it is damaged.
pub fn read_state_file(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    match File::open(path) {
        Ok(mut f) => f.read_to_end(&mut buf)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match next_record(&buf, 0) {
        Record::Whole { payload, end } if end == buf.len() => Ok(Some(payload.to_vec())),
        Record::Whole { .. } => Err(corrupt(path, 0, "trailing bytes after the record")),
        Record::End => Err(corrupt(path, 0, "the file is empty")),
        Record::Damaged(why) => Err(corrupt(path, 0, why)),
    }
}

/// An `InvalidData` error that says which file is damaged and where.
pub fn corrupt(path: &Path, offset: usize, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("control store file {} is corrupt at byte {offset}: {why}", path.display()),
    )
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_named() {
        let mut buf = Vec::new();
        frame(b"hello", &mut buf);
        frame(b"!", &mut buf);
        let Record::Whole { payload, end } = next_record(&buf, 0) else { panic!() };
        assert_eq!(payload, b"hello");
        let Record::Whole { payload, end: end2 } = next_record(&buf, end) else { panic!() };
        assert_eq!(payload, b"!");
        assert_eq!(next_record(&buf, end2), Record::End);
        assert_eq!(next_record(&[0u8; 16], 0), Record::Damaged("a zero-length record"));
        for cut in 1..HEADER + 5 {
            assert!(matches!(next_record(&buf[..cut], 0), Record::Damaged(_)), "cut at {cut}");
        }
        let mut flipped = buf.clone();
        flipped[HEADER + 1] ^= 1;
        assert_eq!(next_record(&flipped, 0), Record::Damaged("a record's checksum does not match"));
        let mut huge = buf.clone();
        huge[3] = 0xff;
        assert_eq!(next_record(&huge, 0), Record::Damaged("a record length is out of range"));
    }

    #[test]
    fn state_files_are_replaced_whole_and_damage_is_an_error() {
        let dir = crate::testing::TempDir::new("disk");
        let path = dir.path().join("vote");
        assert_eq!(read_state_file(&path).unwrap(), None);
        write_state_file(&path, b"one").unwrap();
        write_state_file(&path, b"two").unwrap();
        assert_eq!(read_state_file(&path).unwrap().as_deref(), Some(&b"two"[..]));
        let mut bytes = fs::read(&path).unwrap();
        bytes.pop();
        fs::write(&path, &bytes).unwrap();
        let err = read_state_file(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("vote is corrupt"), "{err}");
    }
}
