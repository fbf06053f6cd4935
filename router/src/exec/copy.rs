//! Splitting `COPY ... FROM STDIN` data into rows and reading each row's sharding key.
//!
//! The client's CopyData messages carry a byte stream whose message boundaries mean nothing;
//! [`CopySplitter`] cuts it into rows (text, CSV or binary format, as PostgreSQL reads them)
//! and decodes the sharding column of each, so the session can send every row to its shard.
//! A header (CSV/text `HEADER`, the binary file header) and the binary trailer go to every
//! shard, so each shard's COPY reads a well-formed stream of its own.

use bytes::{Bytes, BytesMut};
use planner::{CopyFormat, CopyKind};
use vindex::{ColumnType, TypeOid, Value};

use crate::error::{sqlstate, ClientError};

/// A piece of the data stream, ready to forward.
#[derive(Debug, PartialEq)]
pub enum Piece {
    /// Goes to every shard (header, trailer).
    All(Bytes),
    /// One row and its sharding key.
    Row { key: Value, bytes: Bytes },
}

const BINARY_SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
const BAD_COPY_FORMAT: &str = "22P04";

fn bad_data(msg: impl Into<String>) -> ClientError {
    ClientError::new("copy", BAD_COPY_FORMAT, format!("pg-router: {}", msg.into()))
}

/// Cuts COPY data into [`Piece`]s. Feed it every CopyData payload, then call [`finish`].
///
/// [`finish`]: CopySplitter::finish
pub struct CopySplitter {
    format: CopyFormat,
    /// The sharding column's index in each row.
    position: usize,
    column_type: ColumnType,
    /// Bytes not yet cut into pieces.
    buf: BytesMut,
    /// How far `buf` has been scanned for the end of the current row (text and CSV).
    scanned: usize,
    /// CSV: the scan is inside a quoted field.
    in_quote: bool,
    /// The next row (or the binary file header) is a header.
    header_due: bool,
    /// The end-of-data marker (`\.` or the binary trailer) was seen: the rest is ignored.
    ended: bool,
    /// Rows bigger than this are refused (the router buffers one row at a time).
    max_row: usize,
}

impl CopySplitter {
    pub fn new(format: CopyFormat, position: usize, column_type: ColumnType, max_row: usize) -> Self {
        let header_due = format.header || format.kind == CopyKind::Binary;
        Self {
            format,
            position,
            column_type,
            buf: BytesMut::new(),
            scanned: 0,
            in_quote: false,
            header_due,
            ended: false,
            max_row,
        }
    }

    /// Takes one CopyData payload; appends the pieces it completes to `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<Piece>) -> Result<(), ClientError> {
        if self.ended {
            return Ok(());
        }
        self.buf.extend_from_slice(data);
        while !self.ended {
            let piece = match self.format.kind {
                CopyKind::Binary => self.next_binary()?,
                CopyKind::Text | CopyKind::Csv => self.next_line()?,
            };
            match piece {
                Some(p) => out.push(p),
                None => break,
            }
        }
        if self.buf.len() > self.max_row {
            return Err(ClientError::new(
                "copy",
                sqlstate::PROGRAM_LIMIT_EXCEEDED,
                format!("pg-router: a COPY row is larger than max_message_bytes ({} bytes)", self.max_row),
            ));
        }
        Ok(())
    }

    /// The client ended the data: the last row may lack its newline.
    pub fn finish(&mut self, out: &mut Vec<Piece>) -> Result<(), ClientError> {
        if self.ended || self.buf.is_empty() {
            return Ok(());
        }
        if self.format.kind == CopyKind::Binary {
            return Err(bad_data("unexpected end of binary COPY data"));
        }
        if self.format.kind == CopyKind::Csv && self.in_quote {
            return Err(bad_data("unterminated CSV quoted field"));
        }
        let line = self.buf.split().freeze();
        if let Some(p) = self.line_piece(line)? {
            out.push(p);
        }
        Ok(())
    }

    /// Text and CSV: the next whole line, if the buffer holds one.
    fn next_line(&mut self) -> Result<Option<Piece>, ClientError> {
        let csv = self.format.kind == CopyKind::Csv;
        let (quote, escape) = (self.format.quote, self.format.escape);
        let mut i = self.scanned;
        let end = loop {
            let Some(&b) = self.buf.get(i) else {
                self.scanned = i;
                return Ok(None);
            };
            if csv && self.in_quote {
                if b == escape && escape != quote {
                    match self.buf.get(i + 1) {
                        None => {
                            self.scanned = i;
                            return Ok(None);
                        }
                        Some(&n) if n == quote || n == escape => i += 1,
                        Some(_) => {}
                    }
                } else if b == quote {
                    self.in_quote = false;
                }
            } else if csv && b == quote {
                self.in_quote = true;
            } else if b == b'\n' {
                break i;
            }
            i += 1;
        };
        self.scanned = 0;
        let line = self.buf.split_to(end + 1).freeze();
        self.line_piece(line)
    }

    /// What to do with one line (newline included, or the unterminated last one).
    fn line_piece(&mut self, line: Bytes) -> Result<Option<Piece>, ClientError> {
        let content = strip_eol(&line);
        if content == b"\\." {
            self.ended = true;
            self.buf.clear();
            return Ok(None);
        }
        if self.header_due {
            self.header_due = false;
            return Ok(Some(Piece::All(line)));
        }
        let field = match self.format.kind {
            CopyKind::Csv => csv_field(content, self.position, &self.format)?,
            _ => text_field(content, self.position, &self.format)?,
        };
        let key = match field {
            None => Value::Null,
            Some(raw) => {
                Value::from_text_param(Some(&raw), TypeOid::UNKNOWN, self.column_type).map_err(|e| {
                    ClientError::new("copy", sqlstate::INVALID_TEXT_REPRESENTATION, format!("pg-router: {e}"))
                })?
            }
        };
        Ok(Some(Piece::Row { key, bytes: line }))
    }

    /// Binary: the file header, the next whole tuple, or the trailer.
    fn next_binary(&mut self) -> Result<Option<Piece>, ClientError> {
        if self.header_due {
            if self.buf.len() < 19 {
                return Ok(None);
            }
            if &self.buf[..11] != BINARY_SIGNATURE {
                return Err(bad_data("COPY file signature not recognized"));
            }
            let ext = u32::from_be_bytes([self.buf[15], self.buf[16], self.buf[17], self.buf[18]]) as usize;
            if self.buf.len() < 19 + ext {
                return Ok(None);
            }
            self.header_due = false;
            return Ok(Some(Piece::All(self.buf.split_to(19 + ext).freeze())));
        }
        if self.buf.len() < 2 {
            return Ok(None);
        }
        let count = i16::from_be_bytes([self.buf[0], self.buf[1]]);
        if count == -1 {
            self.ended = true;
            let trailer = self.buf.split_to(2).freeze();
            self.buf.clear();
            return Ok(Some(Piece::All(trailer)));
        }
        let count =
            usize::try_from(count).map_err(|_| bad_data("invalid field count in binary COPY data"))?;
        let mut at = 2;
        let mut key = None;
        for f in 0..count {
            let Some(len) = self.buf.get(at..at + 4) else { return Ok(None) };
            let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
            at += 4;
            let value = if len < 0 {
                None
            } else {
                let len = len as usize;
                if self.buf.len() < at + len {
                    return Ok(None);
                }
                at += len;
                Some(&self.buf[at - len..at])
            };
            if f == self.position {
                key = Some(Value::from_binary_param(value, TypeOid::UNKNOWN, self.column_type).map_err(
                    |e| ClientError::new("copy", BAD_COPY_FORMAT, format!("pg-router: sharding key: {e}")),
                )?);
            }
        }
        let key =
            key.ok_or_else(|| bad_data("row has fewer columns than the COPY's sharding key position"))?;
        Ok(Some(Piece::Row { key, bytes: self.buf.split_to(at).freeze() }))
    }
}

/// The line without its `\n` or `\r\n`.
fn strip_eol(line: &[u8]) -> &[u8] {
    let l = line.strip_suffix(b"\n").unwrap_or(line);
    l.strip_suffix(b"\r").unwrap_or(l)
}

/// Text format: field `position` of a line, backslash escapes decoded; `None` for NULL.
fn text_field(line: &[u8], position: usize, format: &CopyFormat) -> Result<Option<Vec<u8>>, ClientError> {
    if line.contains(&b'\r') {
        return Err(bad_data("COPY data with carriage-return line endings (or a literal carriage return) is not supported; write it as \\r"));
    }
    let mut field = 0;
    let mut start = 0;
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            b'\\' => i += 1,
            b if b == format.delimiter => {
                if field == position {
                    return Ok(text_value(&line[start..i], format));
                }
                field += 1;
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if field == position {
        return Ok(text_value(&line[start..], format));
    }
    Err(bad_data("missing data for the sharding key column"))
}

fn text_value(raw: &[u8], format: &CopyFormat) -> Option<Vec<u8>> {
    if raw == format.null.as_slice() {
        return None;
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        i += 1;
        if b != b'\\' || i == raw.len() {
            out.push(b);
            continue;
        }
        let c = raw[i];
        i += 1;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            b'x' if raw.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let mut v = 0u32;
                for _ in 0..2 {
                    match raw.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d;
                            i += 1;
                        }
                        None => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            other => out.push(other),
        }
    }
    Some(out)
}

/// CSV format: field `position` of a record, quotes removed; `None` for NULL (an unquoted
/// field equal to the NULL string).
fn csv_field(line: &[u8], position: usize, format: &CopyFormat) -> Result<Option<Vec<u8>>, ClientError> {
    let (quote, escape, delimiter) = (format.quote, format.escape, format.delimiter);
    let mut field = 0;
    let mut value = Vec::new();
    let mut quoted = false;
    let mut in_quote = false;
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        if in_quote {
            if b == escape && line.get(i + 1).is_some_and(|&n| n == quote || n == escape) && escape != quote {
                value.push(line[i + 1]);
                i += 1;
            } else if b == quote && escape == quote && line.get(i + 1) == Some(&quote) {
                value.push(quote);
                i += 1;
            } else if b == quote {
                in_quote = false;
            } else {
                value.push(b);
            }
        } else if b == quote {
            in_quote = true;
            quoted = true;
        } else if b == delimiter {
            if field == position {
                break;
            }
            field += 1;
            value.clear();
            quoted = false;
        } else if b == b'\r' {
            return Err(bad_data(
                "CSV data with carriage-return line endings (or an unquoted carriage return) is not supported",
            ));
        } else {
            value.push(b);
        }
        i += 1;
    }
    if field != position {
        return Err(bad_data("missing data for the sharding key column"));
    }
    if !quoted && value == format.null {
        return Ok(None);
    }
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn format(kind: CopyKind, header: bool) -> CopyFormat {
        let csv = kind == CopyKind::Csv;
        CopyFormat {
            kind,
            delimiter: if csv { b',' } else { b'\t' },
            null: if csv { Vec::new() } else { b"\\N".to_vec() },
            quote: b'"',
            escape: b'"',
            header,
        }
    }

    /// Feeds `data` in chunks of every size and checks each gives the same pieces.
    fn split(kind: CopyKind, header: bool, position: usize, ty: ColumnType, data: &[u8]) -> Vec<Piece> {
        let mut first: Option<Vec<Piece>> = None;
        for chunk in 1..=data.len().max(1) {
            let mut s = CopySplitter::new(format(kind, header), position, ty, 1 << 20);
            let mut out = Vec::new();
            for c in data.chunks(chunk) {
                s.feed(c, &mut out).unwrap();
            }
            s.finish(&mut out).unwrap();
            match &first {
                None => first = Some(out),
                Some(f) => assert_eq!(f, &out, "chunk size {chunk}"),
            }
        }
        first.unwrap_or_default()
    }

    fn keys(pieces: &[Piece]) -> Vec<Option<Value>> {
        pieces
            .iter()
            .map(|p| match p {
                Piece::All(_) => None,
                Piece::Row { key, .. } => Some(key.clone()),
            })
            .collect()
    }

    #[test]
    fn text_rows_keys_escapes_and_end_marker() {
        let data = b"1\tone\n2\ttwo\\\tstill two\n\\N\tnull key\n3\tlast\n\\.\nignored\n";
        let pieces = split(CopyKind::Text, false, 0, ColumnType::Int, data);
        assert_eq!(
            keys(&pieces),
            vec![Some(Value::Int(1)), Some(Value::Int(2)), Some(Value::Null), Some(Value::Int(3))]
        );
        let Piece::Row { bytes, .. } = &pieces[1] else { panic!() };
        assert_eq!(&bytes[..], b"2\ttwo\\\tstill two\n");
        // The key in the second column, escaped; the last line without a newline.
        let pieces = split(CopyKind::Text, true, 1, ColumnType::Text, b"h1\th2\nx\ta\\tb\\101\\x42\ny\tz");
        assert!(matches!(pieces[0], Piece::All(_)));
        assert_eq!(
            keys(&pieces[1..]),
            vec![Some(Value::Text("a\tbAB".into())), Some(Value::Text("z".into()))]
        );
    }

    #[test]
    fn csv_quotes_newlines_and_nulls() {
        let data =
            b"id,note\n\"7\",\"multi\nline, with \"\"quotes\"\"\"\n,empty key\n\"\",quoted empty\r\n8,x";
        let pieces = split(CopyKind::Csv, true, 0, ColumnType::Text, data);
        assert_eq!(
            keys(&pieces),
            vec![
                None,
                Some(Value::Text("7".into())),
                Some(Value::Null),
                Some(Value::Text(String::new())),
                Some(Value::Text("8".into()))
            ]
        );
        let Piece::Row { bytes, .. } = &pieces[1] else { panic!() };
        assert_eq!(&bytes[..], &b"\"7\",\"multi\nline, with \"\"quotes\"\"\"\n"[..]);
        // A different escape character.
        let mut f = format(CopyKind::Csv, false);
        f.escape = b'\\';
        let mut s = CopySplitter::new(f, 1, ColumnType::Text, 1 << 20);
        let mut out = Vec::new();
        s.feed(b"1,\"a\\\"b\"\n", &mut out).unwrap();
        assert_eq!(keys(&out), vec![Some(Value::Text("a\"b".into()))]);
    }

    #[test]
    fn binary_header_tuples_and_trailer() {
        let mut data = Vec::new();
        data.extend_from_slice(BINARY_SIGNATURE);
        data.extend_from_slice(&0i32.to_be_bytes());
        data.extend_from_slice(&0i32.to_be_bytes());
        for (id, name) in [(5i64, "a"), (6, "bb")] {
            data.extend_from_slice(&2i16.to_be_bytes());
            data.extend_from_slice(&8i32.to_be_bytes());
            data.extend_from_slice(&id.to_be_bytes());
            data.extend_from_slice(&(name.len() as i32).to_be_bytes());
            data.extend_from_slice(name.as_bytes());
        }
        data.extend_from_slice(&(-1i16).to_be_bytes());
        let pieces = split(CopyKind::Binary, false, 0, ColumnType::Int, &data);
        assert_eq!(keys(&pieces), vec![None, Some(Value::Int(5)), Some(Value::Int(6)), None]);
        let total: usize = pieces
            .iter()
            .map(|p| match p {
                Piece::All(b) | Piece::Row { bytes: b, .. } => b.len(),
            })
            .sum();
        assert_eq!(total, data.len());
    }

    /// Mutated inputs in every format, fed in random chunks: never a panic, and while no
    /// error or end marker stops it, every byte fed is in exactly one piece or still buffered.
    #[test]
    fn garbage_never_panics_and_loses_no_bytes() {
        let mut bin = BINARY_SIGNATURE.to_vec();
        bin.extend_from_slice(&[0; 8]);
        bin.extend_from_slice(&[0, 2, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 1, b'x', 0xff, 0xff]);
        let seeds: [(CopyKind, &[u8]); 3] = [
            (CopyKind::Text, b"1\tone\n2\ttw\\o\n\\N\tx\n"),
            (CopyKind::Csv, b"\"1\",\"a\nb\"\n2,\"\"\"\"\n,x\n"),
            (CopyKind::Binary, &bin),
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for n in 0..3000usize {
            let (kind, base) = seeds[n % 3];
            let mut data = base.to_vec();
            for _ in 0..(n % 5) {
                let i = (next() as usize) % data.len();
                data[i] = (next() >> 24) as u8;
            }
            let mut s = CopySplitter::new(format(kind, n % 2 == 0), n % 3, ColumnType::Int, 64);
            let mut out = Vec::new();
            let mut fed = 0;
            let mut failed = false;
            for chunk in data.chunks((next() as usize) % 7 + 1) {
                fed += chunk.len();
                if s.feed(chunk, &mut out).is_err() {
                    failed = true;
                    break;
                }
            }
            if failed || s.ended {
                continue;
            }
            let pieces: usize = out
                .iter()
                .map(|p| match p {
                    Piece::All(b) | Piece::Row { bytes: b, .. } => b.len(),
                })
                .sum();
            assert_eq!(pieces + s.buf.len(), fed, "input {n}");
            let _ = s.finish(&mut out);
        }
    }

    #[test]
    fn bad_data_is_refused() {
        let mut s = CopySplitter::new(format(CopyKind::Text, false), 2, ColumnType::Int, 1 << 20);
        let e = s.feed(b"1\tx\n", &mut Vec::new()).unwrap_err();
        assert_eq!(e.code, BAD_COPY_FORMAT);
        let mut s = CopySplitter::new(format(CopyKind::Text, false), 0, ColumnType::Int, 1 << 20);
        let e = s.feed(b"abc\n", &mut Vec::new()).unwrap_err();
        assert_eq!(e.code, sqlstate::INVALID_TEXT_REPRESENTATION);
        let mut s = CopySplitter::new(format(CopyKind::Text, false), 0, ColumnType::Int, 1 << 20);
        assert!(s.feed(b"1\tx\r2\ty\n", &mut Vec::new()).is_err());
        let mut s = CopySplitter::new(format(CopyKind::Binary, false), 0, ColumnType::Int, 1 << 20);
        assert!(s.feed(b"NOTPGCOPY..........", &mut Vec::new()).is_err());
        let mut s = CopySplitter::new(format(CopyKind::Text, false), 0, ColumnType::Int, 16);
        let e = s.feed(&[b'1'; 32], &mut Vec::new()).unwrap_err();
        assert_eq!(e.code, sqlstate::PROGRAM_LIMIT_EXCEEDED);
    }
}
