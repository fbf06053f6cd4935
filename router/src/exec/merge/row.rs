//! DataRow and RowDescription frames (protocol v3, PostgreSQL `src/backend/access/common/
//! printtup.c`: `printtup` writes DataRow, `SendRowDescriptionCols_3` writes RowDescription).
//!
//! A frame here is the whole message: type byte, int32 length (counting itself, not the type
//! byte), body. Parsing validates every length and keeps the column values as offsets into
//! the shared frame (`bytes::Bytes`), so pass-through columns are never copied.

use bytes::{BufMut, Bytes, BytesMut};

use crate::exec::merge::error::MergeError;

/// DataRow message type byte.
pub const DATA_ROW: u8 = b'D';
/// RowDescription message type byte.
pub const ROW_DESCRIPTION: u8 = b'T';
/// `MaxTupleAttributeNumber` (`src/include/access/htup_details.h`): no result row has more
/// columns.
pub const MAX_COLUMNS: usize = 1664;
/// `PQ_LARGE_MESSAGE_LIMIT` (`src/include/libpq/pqcomm.h`: MaxAllocSize - 1): the largest
/// message a server sends.
pub const MAX_MESSAGE_LEN: usize = 0x3fff_fffe;

/// A column's wire format code (`Bind` result formats / RowDescription format field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Binary,
}

impl Format {
    /// 0 = text, 1 = binary; anything else is a protocol violation.
    pub fn from_code(code: i16) -> Result<Format, MergeError> {
        match code {
            0 => Ok(Format::Text),
            1 => Ok(Format::Binary),
            _ => Err(MergeError::protocol(format!("invalid format code {code}"))),
        }
    }

    pub fn code(self) -> i16 {
        match self {
            Format::Text => 0,
            Format::Binary => 1,
        }
    }
}

/// Reads big-endian fields from a frame body, failing (never panicking) on truncation.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], MergeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| MergeError::protocol(format!("truncated {what}")))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn i16(&mut self, what: &str) -> Result<i16, MergeError> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self, what: &str) -> Result<i32, MergeError> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn cstring(&mut self, what: &str) -> Result<&'a [u8], MergeError> {
        let rest = &self.buf[self.pos..];
        let nul = rest.iter().position(|&c| c == 0);
        let nul = nul.ok_or_else(|| MergeError::protocol(format!("unterminated {what}")))?;
        self.pos += nul + 1;
        Ok(&rest[..nul])
    }
}

/// Check the type byte and length word; return the column count reader positioned after it.
fn open_frame<'a>(frame: &'a [u8], kind: u8, what: &str) -> Result<Reader<'a>, MergeError> {
    if frame.len() < 5 || frame[0] != kind {
        return Err(MergeError::protocol(format!("expected a {what} frame")));
    }
    let len = i32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]);
    if len < 4 || len as usize != frame.len() - 1 || frame.len() - 1 > MAX_MESSAGE_LEN {
        return Err(MergeError::protocol(format!("{what} length word does not match the frame")));
    }
    Ok(Reader { buf: frame, pos: 5 })
}

fn column_count(r: &mut Reader<'_>, what: &str) -> Result<usize, MergeError> {
    let n = r.i16(what)?;
    match usize::try_from(n) {
        Ok(n) if n <= MAX_COLUMNS => Ok(n),
        _ => Err(MergeError::protocol(format!("invalid column count {n} in {what}"))),
    }
}

/// A parsed DataRow: the frame plus each column's offset and length.
#[derive(Debug, Clone)]
pub struct DataRow {
    frame: Bytes,
    /// (start offset, length); length -1 is NULL.
    cols: Vec<(u32, i32)>,
}

impl DataRow {
    /// Parse and validate a whole DataRow frame.
    pub fn parse(frame: Bytes) -> Result<DataRow, MergeError> {
        let mut r = open_frame(&frame, DATA_ROW, "DataRow")?;
        let n = column_count(&mut r, "DataRow")?;
        let mut cols = Vec::with_capacity(n);
        for _ in 0..n {
            let len = r.i32("DataRow column length")?;
            if len == -1 {
                cols.push((0, -1));
                continue;
            }
            let ulen = usize::try_from(len)
                .map_err(|_| MergeError::protocol(format!("invalid DataRow column length {len}")))?;
            let start = r.pos as u32;
            r.take(ulen, "DataRow column")?;
            cols.push((start, len));
        }
        if r.pos != frame.len() {
            return Err(MergeError::protocol("trailing bytes after the last DataRow column"));
        }
        Ok(DataRow { frame, cols })
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.cols.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cols.is_empty()
    }

    /// Column `i`'s bytes; `None` for NULL (and for an index past the end, which callers
    /// rule out by checking the column count once per row).
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        match self.cols.get(i) {
            Some(&(start, len)) if len >= 0 => self.frame.get(start as usize..start as usize + len as usize),
            _ => None,
        }
    }

    /// Column `i` as a zero-copy slice of the frame.
    pub fn get_bytes(&self, i: usize) -> Option<Bytes> {
        match self.cols.get(i) {
            Some(&(start, len)) if len >= 0 => {
                Some(self.frame.slice(start as usize..start as usize + len as usize))
            }
            _ => None,
        }
    }

    /// The frame as received.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }
}

/// Append a DataRow frame with these column values (`None` = NULL).
pub fn write_data_row<'a, I>(out: &mut BytesMut, values: I) -> Result<(), MergeError>
where
    I: IntoIterator<Item = Option<&'a [u8]>>,
    I::IntoIter: ExactSizeIterator,
{
    let values = values.into_iter();
    let count = i16::try_from(values.len()).map_err(|_| MergeError::protocol("too many columns"))?;
    let start = out.len();
    out.put_u8(DATA_ROW);
    out.put_i32(0); // patched below
    out.put_i16(count);
    for v in values {
        match v {
            None => out.put_i32(-1),
            Some(b) => {
                let len = i32::try_from(b.len()).map_err(|_| MergeError::protocol("column too long"))?;
                out.put_i32(len);
                out.put_slice(b);
            }
        }
    }
    let len = i32::try_from(out.len() - start - 1).map_err(|_| MergeError::protocol("row too long"))?;
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// One RowDescription field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDesc {
    /// The column name as the server sent it (client encoding, no NUL).
    pub name: Bytes,
    pub table_oid: u32,
    pub column_attr: i16,
    pub type_oid: u32,
    /// `typlen`: -1 varlena, -2 cstring.
    pub type_size: i16,
    pub type_modifier: i32,
    pub format: Format,
}

impl FieldDesc {
    /// A field not tied to a table column (an aggregate's result).
    pub fn computed(name: Bytes, type_oid: u32, type_size: i16, format: Format) -> FieldDesc {
        FieldDesc { name, table_oid: 0, column_attr: 0, type_oid, type_size, type_modifier: -1, format }
    }
}

/// Parse a whole RowDescription frame.
pub fn parse_row_description(frame: &[u8]) -> Result<Vec<FieldDesc>, MergeError> {
    let mut r = open_frame(frame, ROW_DESCRIPTION, "RowDescription")?;
    let n = column_count(&mut r, "RowDescription")?;
    let mut fields = Vec::with_capacity(n);
    for _ in 0..n {
        let name = Bytes::copy_from_slice(r.cstring("field name")?);
        let what = "RowDescription field";
        let table_oid = r.i32(what)? as u32;
        let column_attr = r.i16(what)?;
        let type_oid = r.i32(what)? as u32;
        let type_size = r.i16(what)?;
        let type_modifier = r.i32(what)?;
        let format = Format::from_code(r.i16(what)?)?;
        fields.push(FieldDesc { name, table_oid, column_attr, type_oid, type_size, type_modifier, format });
    }
    if r.pos != frame.len() {
        return Err(MergeError::protocol("trailing bytes after the last RowDescription field"));
    }
    Ok(fields)
}

/// Encode a RowDescription frame.
pub fn write_row_description(out: &mut BytesMut, fields: &[FieldDesc]) -> Result<(), MergeError> {
    let count = i16::try_from(fields.len()).map_err(|_| MergeError::protocol("too many columns"))?;
    let start = out.len();
    out.put_u8(ROW_DESCRIPTION);
    out.put_i32(0);
    out.put_i16(count);
    for f in fields {
        out.put_slice(&f.name);
        out.put_u8(0);
        out.put_u32(f.table_oid);
        out.put_i16(f.column_attr);
        out.put_u32(f.type_oid);
        out.put_i16(f.type_size);
        out.put_i32(f.type_modifier);
        out.put_i16(f.format.code());
    }
    let len = i32::try_from(out.len() - start - 1).map_err(|_| MergeError::protocol("too long"))?;
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(values: &[Option<&[u8]>]) -> Bytes {
        let mut out = BytesMut::new();
        write_data_row(&mut out, values.iter().copied()).unwrap();
        out.freeze()
    }

    #[test]
    fn data_row_layout_and_round_trip() {
        let frame = row(&[Some(b"42"), None, Some(b"")]);
        // 'D', len = 4 + 2 + (4+2) + 4 + (4+0) = 20, count 3
        assert_eq!(
            &frame[..],
            b"D\x00\x00\x00\x14\x00\x03\x00\x00\x00\x0242\xff\xff\xff\xff\x00\x00\x00\x00"
        );
        let r = DataRow::parse(frame.clone()).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r.get(0), Some(&b"42"[..]));
        assert_eq!(r.get(1), None);
        assert_eq!(r.get(2), Some(&b""[..]));
        assert_eq!(r.get(3), None);
        assert_eq!(r.get_bytes(0).unwrap(), Bytes::from_static(b"42"));
        assert_eq!(r.frame(), &frame);
        let empty = DataRow::parse(row(&[])).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn malformed_data_rows_are_protocol_errors() {
        let good = row(&[Some(b"42"), None]).to_vec();
        let mut cases: Vec<Vec<u8>> = vec![
            vec![],
            b"D".to_vec(),
            b"D\x00\x00\x00".to_vec(),
            b"X\x00\x00\x00\x06\x00\x00".to_vec(),
            b"D\x00\x00\x00\x05\x00".to_vec(),
            b"D\x00\x00\x00\x06\xff\xff".to_vec(), // negative count
            b"D\x00\x00\x00\x0a\x00\x01\xff\xff\xff\xfe".to_vec(), // length -2
            b"D\x00\x00\x00\x0a\x00\x01\x00\x00\x00\x05".to_vec(), // column past the end
            b"D\x00\x00\x00\x07\x00\x00\x00".to_vec(), // trailing byte
            b"D\x00\x00\x00\x06\x00\x02".to_vec(), // missing columns
        ];
        let mut wrong_len = good.clone();
        wrong_len[4] += 1;
        cases.push(wrong_len);
        for cut in 0..good.len() {
            cases.push(good[..cut].to_vec());
        }
        for c in cases {
            let e = DataRow::parse(Bytes::from(c.clone())).unwrap_err();
            assert_eq!(e.sqlstate(), "08P01", "{c:?}");
        }
    }

    #[test]
    fn row_description_round_trip() {
        let fields = vec![
            FieldDesc {
                name: Bytes::from_static(b"id"),
                table_oid: 16384,
                column_attr: 1,
                type_oid: 23,
                type_size: 4,
                type_modifier: -1,
                format: Format::Text,
            },
            FieldDesc::computed(Bytes::from_static(b"avg"), 1700, -1, Format::Binary),
        ];
        let mut out = BytesMut::new();
        write_row_description(&mut out, &fields).unwrap();
        let expected_len = 4 + 2 + (3 + 18) + (4 + 18);
        assert_eq!(out[0], b'T');
        assert_eq!(i32::from_be_bytes([out[1], out[2], out[3], out[4]]), expected_len);
        assert_eq!(parse_row_description(&out).unwrap(), fields);
        let bytes = out.to_vec();
        for cut in 0..bytes.len() {
            assert!(parse_row_description(&bytes[..cut]).is_err());
        }
        let mut bad_format = bytes.clone();
        let last = bad_format.len() - 1;
        bad_format[last] = 7;
        assert!(parse_row_description(&bad_format).is_err());
    }
}
