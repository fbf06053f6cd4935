//! Cross-shard results handed out in chunks: an Execute with a row limit on a router portal.
//!
//! PostgreSQL runs a portal a little at a time: `Execute(portal, n)` returns up to `n` rows and
//! then PortalSuspended, and the next Execute continues. A cross-shard result comes out of a
//! merge over several shard connections that the transaction pool may not keep between
//! messages, so the router runs the merge to the end on the first Execute, keeps the merged
//! rows (at most `routing.max_buffered_rows`), and answers every Execute of the portal from
//! them, as PostgreSQL would:
//!
//! - at most `n` DataRows, then PortalSuspended if exactly `n` were sent (PostgreSQL does not
//!   look ahead either: the Execute after the last full chunk returns `SELECT 0`);
//! - otherwise CommandComplete counting the rows of this Execute alone (`SELECT 3`);
//! - `n = 0` sends everything left.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

use super::fanout::Combine;
use crate::error::{sqlstate, ClientError};
use crate::protocol::backend;

/// Wraps a combiner and keeps what it emits instead of sending it.
pub struct Capture<'a> {
    inner: &'a mut dyn Combine,
    out: BytesMut,
    rows: usize,
    limit: usize,
}

impl<'a> Capture<'a> {
    pub fn new(inner: &'a mut dyn Combine, limit: usize) -> Self {
        Self { inner, out: BytesMut::new(), rows: 0, limit }
    }

    /// The captured frames as a chunked result.
    #[must_use]
    pub fn into_chunks(self) -> Chunks {
        Chunks::from_frames(self.out.freeze())
    }

    /// Counts the DataRows appended since `from`, refusing more than the limit.
    fn count(&mut self, from: usize) -> Result<(), ClientError> {
        for frame in frames(&self.out[from..]) {
            if frame.first() == Some(&b'D') {
                self.rows += 1;
            }
        }
        if self.rows > self.limit {
            return Err(ClientError::new(
                "buffer_limit",
                sqlstate::PROGRAM_LIMIT_EXCEEDED,
                format!(
                    "pg-router: fetching this cross-shard result in chunks needs to hold more than {} rows; \
                     raise routing.max_buffered_rows or fetch without a row limit",
                    self.limit
                ),
            ));
        }
        Ok(())
    }
}

/// Splits whole backend frames (`tag | len:i32 | body`).
fn frames(mut buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if buf.len() < 5 {
            return None;
        }
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        let (frame, rest) = buf.split_at((1 + len).min(buf.len()));
        buf = rest;
        Some(frame)
    })
}

impl Combine for Capture<'_> {
    fn start(&mut self, legs: usize) {
        self.inner.start(legs);
    }

    fn describe(&mut self, leg: usize, frame: Option<Bytes>) -> Result<(), ClientError> {
        self.inner.describe(leg, frame)
    }

    fn row(&mut self, leg: usize, frame: Bytes) -> Result<(), ClientError> {
        self.inner.row(leg, frame)
    }

    fn complete(&mut self, leg: usize, tag: &str) -> Result<(), ClientError> {
        self.inner.complete(leg, tag)
    }

    fn wants(&self, leg: usize) -> bool {
        self.inner.wants(leg)
    }

    fn emit(&mut self, _out: &mut BytesMut) -> Result<(), ClientError> {
        let from = self.out.len();
        self.inner.emit(&mut self.out)?;
        self.count(from)
    }

    fn finish(&mut self, _out: &mut BytesMut) -> Result<(), ClientError> {
        let from = self.out.len();
        self.inner.finish(&mut self.out)?;
        self.count(from)
    }
}

/// A finished result, handed out by [`Chunks::next`].
#[derive(Debug)]
pub struct Chunks {
    /// DataRows (and anything else the merge emitted before its CommandComplete), in order.
    frames: VecDeque<Bytes>,
    /// The command word of the final tag (`SELECT`).
    verb: String,
    /// The result's own final tag (`DELETE 20`).
    tag: String,
    /// End with `tag` rather than the rows of the last chunk (a write's count is its whole
    /// count, whatever the row limit).
    whole_tag: bool,
}

impl Chunks {
    fn from_frames(all: Bytes) -> Self {
        let mut frames = VecDeque::new();
        let mut verb = "SELECT".to_owned();
        let mut whole = String::new();
        let mut at = 0;
        for frame in self::frames(&all) {
            let bytes = all.slice(at..at + frame.len());
            at += frame.len();
            if frame.first() == Some(&b'C') {
                let tag = frame.get(5..).unwrap_or_default().split(|b| *b == 0).next().unwrap_or_default();
                let tag = String::from_utf8_lossy(tag);
                verb = tag.rsplit_once(' ').map_or(tag.as_ref(), |(v, _)| v).to_owned();
                whole = tag.into_owned();
            } else {
                frames.push_back(bytes);
            }
        }
        Self { frames, verb, tag: whole, whole_tag: false }
    }

    /// Ends with the result's own tag (a write: `UPDATE 7` whatever the row limit).
    #[must_use]
    pub fn with_whole_tag(mut self) -> Self {
        self.whole_tag = !self.tag.is_empty();
        self
    }

    /// A result already handed out whole.
    #[must_use]
    pub fn exhausted(verb: &str) -> Self {
        Self { frames: VecDeque::new(), verb: verb.to_owned(), tag: String::new(), whole_tag: false }
    }

    /// The reply to one `Execute` with row limit `max_rows` (0: no limit).
    pub fn next(&mut self, max_rows: usize) -> Bytes {
        let mut out = BytesMut::new();
        let mut sent = 0;
        while let Some(f) = self.frames.front() {
            if f.first() == Some(&b'D') {
                if max_rows > 0 && sent == max_rows {
                    break;
                }
                sent += 1;
            }
            if let Some(f) = self.frames.pop_front() {
                out.extend_from_slice(&f);
            }
        }
        if max_rows > 0 && sent == max_rows {
            out.put_u8(b's');
            out.put_i32(4);
        } else if self.whole_tag {
            backend::command_complete(&mut out, &self.tag);
        } else {
            backend::command_complete(&mut out, &format!("{} {sent}", self.verb));
        }
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::exec::Concat;

    fn row(v: &str) -> Bytes {
        let mut b = BytesMut::new();
        backend::text_data_row(&mut b, &[v]);
        b.freeze()
    }

    fn captured(rows: usize, limit: usize) -> Result<Chunks, ClientError> {
        let mut concat = Concat::new(false);
        let mut cap = Capture::new(&mut concat, limit);
        cap.start(1);
        cap.describe(0, None)?;
        let mut sink = BytesMut::new();
        for i in 0..rows {
            cap.row(0, row(&i.to_string()))?;
            cap.emit(&mut sink)?;
        }
        cap.complete(0, &format!("SELECT {rows}"))?;
        cap.finish(&mut sink)?;
        assert!(sink.is_empty(), "nothing reaches the client directly");
        Ok(cap.into_chunks())
    }

    /// (DataRows, final message tag, final tag text) of one reply.
    fn parse(reply: &[u8]) -> (usize, u8, String) {
        let all: Vec<&[u8]> = frames(reply).collect();
        let last = all.last().unwrap();
        let text =
            String::from_utf8_lossy(last.get(5..).unwrap_or_default()).trim_end_matches('\0').to_owned();
        (all.iter().filter(|f| f[0] == b'D').count(), last[0], text)
    }

    #[test]
    fn executes_hand_out_chunks_like_postgres() {
        let mut c = captured(5, 100).unwrap();
        assert_eq!(parse(&c.next(2)), (2, b's', String::new()));
        assert_eq!(parse(&c.next(2)), (2, b's', String::new()));
        assert_eq!(parse(&c.next(2)), (1, b'C', "SELECT 1".into()));
        assert_eq!(parse(&c.next(2)), (0, b'C', "SELECT 0".into()));
        let mut c = captured(4, 100).unwrap();
        assert_eq!(parse(&c.next(4)), (4, b's', String::new()), "no look-ahead past a full chunk");
        assert_eq!(parse(&c.next(4)), (0, b'C', "SELECT 0".into()));
        let mut c = captured(3, 100).unwrap();
        assert_eq!(parse(&c.next(1)), (1, b's', String::new()));
        assert_eq!(parse(&c.next(0)), (2, b'C', "SELECT 2".into()), "0 fetches the rest");
    }

    #[test]
    fn holding_more_than_the_limit_is_54000() {
        assert!(captured(10, 10).is_ok());
        let e = captured(11, 10).unwrap_err();
        assert_eq!(e.code, sqlstate::PROGRAM_LIMIT_EXCEEDED);
        assert!(e.message.contains("more than 10 rows"), "{}", e.message);
    }
}
