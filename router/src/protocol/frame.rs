//! Splitting a byte stream into protocol frames.
//!
//! Every message after startup is `tag:u8 | len:i32 | body`, where `len` counts itself but not
//! the tag (PostgreSQL `src/backend/libpq/pqcomm.c`, `pq_getmessage`). Startup-phase packets
//! (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest) have no tag: `len:i32 | body`.

use bytes::{Buf, Bytes, BytesMut};

/// Length of a tagged frame header: tag byte plus the 4-byte length.
pub const HEADER_LEN: usize = 5;

/// PostgreSQL refuses any message longer than `PQ_LARGE_MESSAGE_LIMIT` (1 GB - 1,
/// `src/include/libpq/libpq.h`); backends never send more, so this bounds server frames.
pub const PG_MAX_MESSAGE_LEN: usize = 0x3fff_ffff;

/// Startup packets are capped at `MAX_STARTUP_PACKET_LENGTH` (10000 bytes,
/// `src/include/libpq/pqcomm.h`).
pub const MAX_STARTUP_PACKET_LEN: usize = 10_000;

/// One whole tagged message: `bytes` holds the full frame, header included, so it can be
/// forwarded unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub tag: u8,
    pub bytes: Bytes,
}

impl Frame {
    /// The message body, after the 5-byte header.
    pub fn body(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..]
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("invalid message length {len} for message type '{}'", char::from(*tag))]
    InvalidLength { tag: u8, len: i32 },
    #[error("message of type '{}' is {len} bytes, over the limit of {limit} bytes", char::from(*tag))]
    TooLarge { tag: u8, len: usize, limit: usize },
    #[error("invalid startup packet length {len}")]
    InvalidStartupLength { len: i32 },
}

/// Peeks at the header at the start of `buf`: returns `(tag, total frame length)` once the five
/// header bytes are there, validating the length against `limit` before anything is allocated.
pub fn peek_header(buf: &[u8], limit: usize) -> Result<Option<(u8, usize)>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let tag = buf[0];
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(FrameError::InvalidLength { tag, len });
    }
    let len = len as usize;
    if len > limit {
        return Err(FrameError::TooLarge { tag, len, limit });
    }
    Ok(Some((tag, len + 1)))
}

/// Takes one whole tagged frame off the front of `buf`, or `Ok(None)` if more bytes are needed.
/// When a header announces a frame larger than the free space, room for it is reserved so the
/// next read can fill it in one go.
pub fn next_frame(buf: &mut BytesMut, limit: usize) -> Result<Option<Frame>, FrameError> {
    let Some((tag, total)) = peek_header(buf, limit)? else {
        return Ok(None);
    };
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    Ok(Some(Frame { tag, bytes: buf.split_to(total).freeze() }))
}

/// Takes one untagged startup-phase packet (`len | body`) off `buf`; returns the body.
pub fn next_startup_packet(buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    // A startup packet holds at least the 4-byte length and a 4-byte code.
    if len < 8 || len as usize > MAX_STARTUP_PACKET_LEN {
        return Err(FrameError::InvalidStartupLength { len });
    }
    let len = len as usize;
    if buf.len() < len {
        return Ok(None);
    }
    let mut packet = buf.split_to(len);
    packet.advance(4);
    Ok(Some(packet.freeze()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn splits_frames_and_waits_for_partial_ones() {
        let mut bytes = frame(b'Q', b"select 1\0");
        bytes.extend(frame(b'S', b""));
        let mut buf = BytesMut::from(&bytes[..bytes.len() - 2]);
        let first = next_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(first.tag, b'Q');
        assert_eq!(first.body(), b"select 1\0");
        assert_eq!(next_frame(&mut buf, 1024).unwrap(), None);
        buf.extend_from_slice(&bytes[bytes.len() - 2..]);
        let second = next_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!((second.tag, second.body().len()), (b'S', 0));
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_bad_and_oversized_lengths_before_allocating() {
        let mut buf = BytesMut::from(&[b'Q', 0, 0, 0, 3][..]);
        assert_eq!(next_frame(&mut buf, 1024), Err(FrameError::InvalidLength { tag: b'Q', len: 3 }));
        let mut buf = BytesMut::from(&[b'Q', 0x7f, 0xff, 0xff, 0xff][..]);
        let err = next_frame(&mut buf, 1024).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { len: 0x7fff_ffff, .. }));
        assert!(buf.capacity() < 1 << 20);
        let mut buf = BytesMut::from(&[b'Q', 0xff, 0xff, 0xff, 0xff][..]);
        assert!(next_frame(&mut buf, 1024).is_err());
    }

    #[test]
    fn startup_packets() {
        let mut buf = BytesMut::from(&[0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f, 1][..]);
        let body = next_startup_packet(&mut buf).unwrap().unwrap();
        assert_eq!(&body[..], &[4, 0xd2, 0x16, 0x2f]);
        assert_eq!(&buf[..], &[1]);
        let mut buf = BytesMut::from(&[0, 0, 0x30, 0][..]);
        assert!(next_startup_packet(&mut buf).is_err());
        let mut buf = BytesMut::from(&[0, 0, 0, 4][..]);
        assert!(next_startup_packet(&mut buf).is_err());
    }
}
