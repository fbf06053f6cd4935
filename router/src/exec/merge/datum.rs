//! Decoding, comparing and encoding the column values the engine must look at.
//!
//! Only sort keys, group keys, aggregate inputs and HAVING operands are decoded; pass-through
//! columns stay raw bytes. The order is that of each type's default btree operator class
//! (PostgreSQL `src/backend/access/nbtree/nbtcompare.c`, `float.c` `float8_cmp_internal`,
//! `numeric.c` `cmp_numerics`, `varlena.c`, `uuid.c`, `bool.c`, `date.c`, `timestamp.c`).
//! Text-like types compare as bytes: cross-shard text ordering assumes the C collation (the
//! router documents this). OIDs are from `src/include/catalog/pg_type.dat`.

use std::cmp::Ordering;

use crate::exec::merge::datetime::{self, Interval};
use crate::exec::merge::error::MergeError;
use crate::exec::merge::float;
use crate::exec::merge::numeric::Numeric;
use crate::exec::merge::row::Format;

/// The types the engine can decode, by OID (`pg_type.dat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeKind {
    Bool,
    Bytea,
    /// `"char"`, one byte.
    Char,
    Name,
    Int8,
    Int2,
    Int4,
    Text,
    Oid,
    Float4,
    Float8,
    Bpchar,
    Varchar,
    Date,
    Time,
    Timestamp,
    Timestamptz,
    Interval,
    Numeric,
    Uuid,
}

impl TypeKind {
    /// The kind of a type OID, or `None` when the engine cannot decode it.
    pub fn from_oid(oid: u32) -> Option<TypeKind> {
        Some(match oid {
            16 => TypeKind::Bool,
            17 => TypeKind::Bytea,
            18 => TypeKind::Char,
            19 => TypeKind::Name,
            20 => TypeKind::Int8,
            21 => TypeKind::Int2,
            23 => TypeKind::Int4,
            25 => TypeKind::Text,
            26 => TypeKind::Oid,
            700 => TypeKind::Float4,
            701 => TypeKind::Float8,
            1042 => TypeKind::Bpchar,
            1043 => TypeKind::Varchar,
            1082 => TypeKind::Date,
            1083 => TypeKind::Time,
            1114 => TypeKind::Timestamp,
            1184 => TypeKind::Timestamptz,
            1186 => TypeKind::Interval,
            1700 => TypeKind::Numeric,
            2950 => TypeKind::Uuid,
            _ => return None,
        })
    }

    /// Like [`TypeKind::from_oid`], with the engine's error for unknown types.
    pub fn require(oid: u32) -> Result<TypeKind, MergeError> {
        TypeKind::from_oid(oid).ok_or_else(|| {
            MergeError::unsupported(format!("cannot merge values of type oid {oid} across shards"))
        })
    }

    /// Whether a value can be converted from one wire format to the other. timestamptz and
    /// interval text output depend on session settings (TimeZone, IntervalStyle) the engine
    /// does not know, so only text → binary works for them.
    pub fn can_convert(self, from: Format, to: Format) -> bool {
        from == to || to == Format::Binary || !matches!(self, TypeKind::Timestamptz | TypeKind::Interval)
    }
}

/// A decoded value. Values of one column always have the same variant (or `Null`).
#[derive(Debug, Clone)]
pub enum Datum {
    Null,
    Bool(bool),
    /// int2, int4, int8, oid.
    Int(i64),
    /// float4 (widened exactly) and float8.
    Float(f64),
    Numeric(Numeric),
    /// text, varchar, name, bytea, uuid, "char": compared bytewise.
    Bytes(Vec<u8>),
    /// bpchar: trailing spaces are insignificant (`bpcharcmp` via `bcTruelen`).
    Bpchar(Vec<u8>),
    Date(i32),
    /// time and timestamp/timestamptz microseconds (timestamptz in UTC).
    Micros(i64),
    Interval(Interval),
}

impl Datum {
    pub fn is_null(&self) -> bool {
        matches!(self, Datum::Null)
    }

    fn rank(&self) -> u8 {
        match self {
            Datum::Bool(_) => 0,
            Datum::Int(_) => 1,
            Datum::Float(_) => 2,
            Datum::Numeric(_) => 3,
            Datum::Bytes(_) => 4,
            Datum::Bpchar(_) => 5,
            Datum::Date(_) => 6,
            Datum::Micros(_) => 7,
            Datum::Interval(_) => 8,
            Datum::Null => 9,
        }
    }
}

/// `float8_cmp_internal`: NaN equals NaN and sorts above everything; -0 equals 0.
pub fn cmp_f64(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

fn trim_spaces(b: &[u8]) -> &[u8] {
    let n = b.iter().rposition(|&c| c != b' ').map_or(0, |i| i + 1);
    &b[..n]
}

/// Compare two values of the same column in the default btree order. NULL sorts after
/// everything and equals NULL (callers apply NULLS FIRST/LAST and DESC themselves); this is
/// also the equality used for GROUP BY and DISTINCT (numeric 1.0 = 1.00).
pub fn compare(a: &Datum, b: &Datum) -> Ordering {
    match (a, b) {
        (Datum::Bool(x), Datum::Bool(y)) => x.cmp(y),
        (Datum::Int(x), Datum::Int(y)) => x.cmp(y),
        (Datum::Float(x), Datum::Float(y)) => cmp_f64(*x, *y),
        (Datum::Numeric(x), Datum::Numeric(y)) => x.cmp_pg(y),
        (Datum::Bytes(x), Datum::Bytes(y)) => x.cmp(y),
        (Datum::Bpchar(x), Datum::Bpchar(y)) => trim_spaces(x).cmp(trim_spaces(y)),
        (Datum::Date(x), Datum::Date(y)) => x.cmp(y),
        (Datum::Micros(x), Datum::Micros(y)) => x.cmp(y),
        (Datum::Interval(x), Datum::Interval(y)) => x.cmp_value().cmp(&y.cmp_value()),
        _ => a.rank().cmp(&b.rank()),
    }
}

fn utf8<'a>(v: &'a [u8], type_name: &'static str) -> Result<&'a str, MergeError> {
    std::str::from_utf8(v).map_err(|_| MergeError::InvalidText { type_name })
}

fn fixed<const N: usize>(v: &[u8], type_name: &str) -> Result<[u8; N], MergeError> {
    v.try_into().map_err(|_| MergeError::protocol(format!("binary {type_name} value is not {N} bytes")))
}

fn parse_int(v: &[u8], min: i64, max: i64, type_name: &'static str) -> Result<i64, MergeError> {
    let s = utf8(v, type_name)?.trim_matches(|c: char| c.is_ascii_whitespace());
    let n: i64 = s.parse().map_err(|_| MergeError::InvalidText { type_name })?;
    if n < min || n > max {
        return Err(MergeError::Overflow { what: type_name });
    }
    Ok(n)
}

/// Decode one column value. `None` is SQL NULL.
pub fn decode(kind: TypeKind, format: Format, value: Option<&[u8]>) -> Result<Datum, MergeError> {
    let Some(v) = value else { return Ok(Datum::Null) };
    match format {
        Format::Text => decode_text(kind, v),
        Format::Binary => decode_binary(kind, v),
    }
}

fn decode_text(kind: TypeKind, v: &[u8]) -> Result<Datum, MergeError> {
    use TypeKind as K;
    Ok(match kind {
        K::Bool => Datum::Bool(parse_bool(v)?),
        K::Int2 => Datum::Int(parse_int(v, i16::MIN.into(), i16::MAX.into(), "smallint")?),
        K::Int4 => Datum::Int(parse_int(v, i32::MIN.into(), i32::MAX.into(), "integer")?),
        K::Int8 => Datum::Int(parse_int(v, i64::MIN, i64::MAX, "bigint")?),
        K::Oid => Datum::Int(parse_int(v, 0, u32::MAX.into(), "oid")?),
        K::Float4 => Datum::Float(float::parse_f32(utf8(v, "real")?)? as f64),
        K::Float8 => Datum::Float(float::parse_f64(utf8(v, "double precision")?)?),
        K::Numeric => Datum::Numeric(Numeric::parse(utf8(v, "numeric")?)?),
        K::Text | K::Varchar | K::Name => Datum::Bytes(v.to_vec()),
        K::Bpchar => Datum::Bpchar(v.to_vec()),
        K::Char => Datum::Bytes(parse_char(v)?),
        K::Bytea => Datum::Bytes(parse_bytea(v)?),
        K::Uuid => Datum::Bytes(parse_uuid(v)?.to_vec()),
        K::Date => Datum::Date(datetime::parse_date(utf8(v, "date")?)?),
        K::Time => Datum::Micros(datetime::parse_time(utf8(v, "time without time zone")?)?),
        K::Timestamp => Datum::Micros(datetime::parse_timestamp(utf8(v, "timestamp")?, false)?),
        K::Timestamptz => Datum::Micros(datetime::parse_timestamp(utf8(v, "timestamptz")?, true)?),
        K::Interval => Datum::Interval(datetime::parse_interval(utf8(v, "interval")?)?),
    })
}

fn decode_binary(kind: TypeKind, v: &[u8]) -> Result<Datum, MergeError> {
    use TypeKind as K;
    Ok(match kind {
        // boolrecv: any nonzero byte is true.
        K::Bool => Datum::Bool(fixed::<1>(v, "boolean")?[0] != 0),
        K::Int2 => Datum::Int(i16::from_be_bytes(fixed(v, "smallint")?).into()),
        K::Int4 => Datum::Int(i32::from_be_bytes(fixed(v, "integer")?).into()),
        K::Int8 => Datum::Int(i64::from_be_bytes(fixed(v, "bigint")?)),
        K::Oid => Datum::Int(u32::from_be_bytes(fixed(v, "oid")?).into()),
        K::Float4 => Datum::Float(float::f32_from_binary(v)? as f64),
        K::Float8 => Datum::Float(float::f64_from_binary(v)?),
        K::Numeric => Datum::Numeric(Numeric::from_binary(v)?),
        // textsend/byteasend/namesend send the raw bytes; charsend one byte.
        K::Text | K::Varchar | K::Name | K::Bytea => Datum::Bytes(v.to_vec()),
        K::Bpchar => Datum::Bpchar(v.to_vec()),
        K::Char => Datum::Bytes(fixed::<1>(v, "\"char\"")?.to_vec()),
        K::Uuid => Datum::Bytes(fixed::<16>(v, "uuid")?.to_vec()),
        K::Date => Datum::Date(i32::from_be_bytes(fixed(v, "date")?)),
        K::Time | K::Timestamp | K::Timestamptz => Datum::Micros(i64::from_be_bytes(fixed(v, "timestamp")?)),
        K::Interval => Datum::Interval(datetime::interval_from_binary(v)?),
    })
}

/// `boolin`: t/f as printed, plus the other spellings it accepts.
fn parse_bool(v: &[u8]) -> Result<bool, MergeError> {
    let s = utf8(v, "boolean")?.trim().to_ascii_lowercase();
    match s.as_str() {
        "t" | "true" | "y" | "yes" | "on" | "1" => Ok(true),
        "f" | "false" | "n" | "no" | "off" | "0" => Ok(false),
        _ => Err(MergeError::InvalidText { type_name: "boolean" }),
    }
}

/// `charin`: one byte, or `\ooo` octal as `charout` prints bytes with the high bit set.
fn parse_char(v: &[u8]) -> Result<Vec<u8>, MergeError> {
    if v.len() == 4 && v[0] == b'\\' && v[1..].iter().all(|c| (b'0'..=b'7').contains(c)) {
        let o = (v[1] - b'0') as u32 * 64 + (v[2] - b'0') as u32 * 8 + (v[3] - b'0') as u32;
        return Ok(vec![u8::try_from(o).map_err(|_| MergeError::InvalidText { type_name: "\"char\"" })?]);
    }
    // An empty string is the zero byte.
    Ok(vec![v.first().copied().unwrap_or(0)])
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// `byteain`: `\x` hex (bytea_output = hex, the default) or the escape format.
fn parse_bytea(v: &[u8]) -> Result<Vec<u8>, MergeError> {
    let err = || MergeError::InvalidText { type_name: "bytea" };
    if let Some(hex) = v.strip_prefix(b"\\x") {
        let digits: Vec<u8> = hex.iter().copied().filter(|c| !c.is_ascii_whitespace()).collect();
        if !digits.len().is_multiple_of(2) {
            return Err(err());
        }
        let mut out = Vec::with_capacity(digits.len() / 2);
        for p in digits.chunks(2) {
            out.push(hex_val(p[0]).ok_or_else(err)? * 16 + hex_val(p[1]).ok_or_else(err)?);
        }
        return Ok(out);
    }
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] != b'\\' {
            out.push(v[i]);
            i += 1;
        } else if v.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else if i + 3 < v.len() && v[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let o = (v[i + 1] - b'0') as u32 * 64 + (v[i + 2] - b'0') as u32 * 8 + (v[i + 3] - b'0') as u32;
            out.push(u8::try_from(o).map_err(|_| err())?);
            i += 4;
        } else {
            return Err(err());
        }
    }
    Ok(out)
}

/// `uuid_in`: 32 hex digits, optional hyphens after groups of four, optional braces.
fn parse_uuid(v: &[u8]) -> Result<[u8; 16], MergeError> {
    let err = || MergeError::InvalidText { type_name: "uuid" };
    let v = v.strip_prefix(b"{").and_then(|x| x.strip_suffix(b"}")).unwrap_or(v);
    let digits: Vec<u8> = v.iter().copied().filter(|&c| c != b'-').collect();
    if digits.len() != 32 {
        return Err(err());
    }
    let mut out = [0u8; 16];
    for (i, p) in digits.chunks(2).enumerate() {
        out[i] = hex_val(p[0]).ok_or_else(err)? * 16 + hex_val(p[1]).ok_or_else(err)?;
    }
    Ok(out)
}

/// Encode a value of `kind` in `format` (PostgreSQL's output / send functions). `Null` is
/// the caller's business (length -1 on the wire).
pub fn encode(d: &Datum, kind: TypeKind, format: Format, out: &mut Vec<u8>) -> Result<(), MergeError> {
    match format {
        Format::Text => encode_text(d, kind, out),
        Format::Binary => encode_binary(d, kind, out),
    }
}

fn mismatch(kind: TypeKind) -> MergeError {
    MergeError::unsupported(format!("cannot encode a merged value as {kind:?}"))
}

fn int_in_range(n: i64, kind: TypeKind) -> Result<i64, MergeError> {
    let (min, max, what) = match kind {
        TypeKind::Int2 => (i16::MIN.into(), i16::MAX.into(), "smallint"),
        TypeKind::Int4 => (i32::MIN.into(), i32::MAX.into(), "integer"),
        TypeKind::Oid => (0, u32::MAX.into(), "oid"),
        _ => (i64::MIN, i64::MAX, "bigint"),
    };
    if n < min || n > max {
        Err(MergeError::Overflow { what })
    } else {
        Ok(n)
    }
}

fn encode_text(d: &Datum, kind: TypeKind, out: &mut Vec<u8>) -> Result<(), MergeError> {
    use TypeKind as K;
    let s = match (d, kind) {
        (Datum::Bool(b), K::Bool) => (if *b { "t" } else { "f" }).to_string(),
        (Datum::Int(n), K::Int2 | K::Int4 | K::Int8 | K::Oid) => int_in_range(*n, kind)?.to_string(),
        (Datum::Float(x), K::Float4) => float::format_f32(*x as f32),
        (Datum::Float(x), K::Float8) => float::format_f64(*x),
        (Datum::Numeric(n), K::Numeric) => n.to_text(),
        (Datum::Bytes(b), K::Text | K::Varchar | K::Name) | (Datum::Bpchar(b), K::Bpchar) => {
            out.extend_from_slice(b);
            return Ok(());
        }
        (Datum::Bytes(b), K::Bytea) => {
            // byteaout with bytea_output = hex.
            let mut s = String::with_capacity(2 + 2 * b.len());
            s.push_str("\\x");
            for byte in b {
                s.push_str(&format!("{byte:02x}"));
            }
            s
        }
        (Datum::Bytes(b), K::Char) => match b.first().copied().unwrap_or(0) {
            0 => String::new(),
            c if c >= 0x80 => format!("\\{:03o}", c),
            c => (c as char).to_string(),
        },
        (Datum::Bytes(b), K::Uuid) if b.len() == 16 => {
            let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
        }
        (Datum::Date(n), K::Date) => datetime::format_date(*n),
        (Datum::Micros(t), K::Time) => datetime::format_time(*t),
        (Datum::Micros(t), K::Timestamp) => datetime::format_timestamp(*t),
        (_, K::Timestamptz | K::Interval) => {
            return Err(MergeError::unsupported(format!(
                "cannot convert {kind:?} to text across shards: its output depends on session settings"
            )));
        }
        _ => return Err(mismatch(kind)),
    };
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn encode_binary(d: &Datum, kind: TypeKind, out: &mut Vec<u8>) -> Result<(), MergeError> {
    use TypeKind as K;
    match (d, kind) {
        (Datum::Bool(b), K::Bool) => out.push(u8::from(*b)),
        (Datum::Int(n), K::Int2) => out.extend_from_slice(&(int_in_range(*n, kind)? as i16).to_be_bytes()),
        (Datum::Int(n), K::Int4) => out.extend_from_slice(&(int_in_range(*n, kind)? as i32).to_be_bytes()),
        (Datum::Int(n), K::Oid) => out.extend_from_slice(&(int_in_range(*n, kind)? as u32).to_be_bytes()),
        (Datum::Int(n), K::Int8) => out.extend_from_slice(&n.to_be_bytes()),
        (Datum::Float(x), K::Float4) => out.extend_from_slice(&(*x as f32).to_be_bytes()),
        (Datum::Float(x), K::Float8) => out.extend_from_slice(&x.to_be_bytes()),
        (Datum::Numeric(n), K::Numeric) => n.to_binary(out),
        (Datum::Bytes(b), K::Text | K::Varchar | K::Name | K::Bytea | K::Char | K::Uuid)
        | (Datum::Bpchar(b), K::Bpchar) => out.extend_from_slice(b),
        (Datum::Date(n), K::Date) => out.extend_from_slice(&n.to_be_bytes()),
        (Datum::Micros(t), K::Time | K::Timestamp | K::Timestamptz) => {
            out.extend_from_slice(&t.to_be_bytes())
        }
        (Datum::Interval(iv), K::Interval) => datetime::interval_to_binary(iv, out),
        _ => return Err(mismatch(kind)),
    }
    Ok(())
}

#[cfg(test)]
mod tests;
