//! Text input forms, following PostgreSQL 15's input functions (`int8in`, `uuid_in`,
//! `byteain`), returning a static reason on failure.

use crate::error::{Error, Result};
use crate::value::ColumnType;

type Parsed<T> = std::result::Result<T, &'static str>;

/// PostgreSQL's integer input: optional surrounding whitespace, optional sign, decimal digits
/// (PostgreSQL 15 has no `_` separators or `0x` prefixes), checked against `[min, max]`.
pub(crate) fn parse_int(s: &str, min: i64, max: i64) -> Parsed<i64> {
    // The common case, a key as drivers send it: up to 18 digits cannot overflow an i64.
    let b = s.as_bytes();
    if !b.is_empty() && b.len() <= 18 && b.iter().all(u8::is_ascii_digit) {
        let v = b.iter().fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'));
        return if v < min || v > max { Err("integer out of range") } else { Ok(v) };
    }
    let t = s.trim_matches(|c: char| c.is_ascii_whitespace());
    let (negative, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("invalid input syntax for an integer");
    }
    let mut magnitude: i128 = 0;
    for b in digits.bytes() {
        magnitude = magnitude * 10 + i128::from(b - b'0');
        if magnitude > 1 << 64 {
            return Err("integer out of range");
        }
    }
    let v = if negative { -magnitude } else { magnitude };
    if v < i128::from(min) || v > i128::from(max) {
        return Err("integer out of range");
    }
    i64::try_from(v).map_err(|_| "integer out of range")
}

/// A numeric literal from SQL text (`42`, `-7`, `+3`, `42.0`, `1e3`). Only integers in `i64`
/// are keys of an int column; anything else (a fraction, an exponent, out of range) is an error
/// so the caller does not route on a value PostgreSQL would compare as `numeric`.
pub(crate) fn parse_sql_integer(s: &str) -> Result<i64> {
    parse_int(s, i64::MIN, i64::MAX).map_err(|reason| Error::InvalidValue {
        column_type: ColumnType::Int,
        reason: if s.contains(['.', 'e', 'E']) { "numeric literal is not an integer" } else { reason },
    })
}

/// PostgreSQL's `uuid_in`: 32 hex digits, optionally in braces, with an optional hyphen after
/// any group of four digits (`a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11`, `{A0EEBC99...}`,
/// `a0eebc999c0b4ef8bb6d6bb9bd380a11`, `a0ee-bc99-...`).
pub(crate) fn parse_uuid(s: &str) -> Parsed<[u8; 16]> {
    let inner = match s.strip_prefix('{') {
        Some(rest) => rest.strip_suffix('}').ok_or("unbalanced brace in uuid")?,
        None => s,
    };
    let mut out = [0u8; 16];
    let mut digits = 0usize;
    let mut last_was_hyphen = false;
    for c in inner.chars() {
        if c == '-' {
            if digits == 0 || !digits.is_multiple_of(4) || digits == 32 || last_was_hyphen {
                return Err("misplaced hyphen in uuid");
            }
            last_was_hyphen = true;
            continue;
        }
        let d = c.to_digit(16).ok_or("invalid character in uuid")?;
        if digits == 32 {
            return Err("uuid has more than 32 hex digits");
        }
        out[digits / 2] |= (d as u8) << if digits.is_multiple_of(2) { 4 } else { 0 };
        digits += 1;
        last_was_hyphen = false;
    }
    if digits != 32 || last_was_hyphen {
        return Err("uuid must have 32 hex digits");
    }
    Ok(out)
}

/// The canonical `8-4-4-4-12` lowercase form.
pub(crate) fn format_uuid(u: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// PostgreSQL's `byteain`: the hex form `\x0aff` (whitespace allowed between digit pairs) or
/// the escape form (`\\` is a backslash, `\ooo` an octal byte, other bytes stand for
/// themselves).
pub(crate) fn parse_bytea(s: &str) -> Parsed<Vec<u8>> {
    if let Some(hex) = s.strip_prefix("\\x").or_else(|| s.strip_prefix("\\X")) {
        return parse_bytea_hex(hex);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes.get(i + 1..i + 4) {
            Some([b'\\', ..]) => {
                out.push(b'\\');
                i += 2;
            }
            Some(&[a @ b'0'..=b'3', b @ b'0'..=b'7', c @ b'0'..=b'7']) => {
                out.push(((a - b'0') << 6) | ((b - b'0') << 3) | (c - b'0'));
                i += 4;
            }
            _ if bytes.get(i + 1) == Some(&b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            _ => return Err("invalid escape in bytea"),
        }
    }
    Ok(out)
}

fn parse_bytea_hex(hex: &str) -> Parsed<Vec<u8>> {
    let bytes = hex.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() / 2);
    let mut i = 0;
    while i < bytes.len() {
        if matches!(bytes[i], b' ' | b'\t' | b'\n' | b'\r') {
            i += 1;
            continue;
        }
        let lo = *bytes.get(i + 1).ok_or("odd number of hex digits in bytea")?;
        let hi = (bytes[i] as char).to_digit(16).ok_or("invalid hex digit in bytea")?;
        let lo = (lo as char).to_digit(16).ok_or("invalid hex digit in bytea")?;
        out.push(((hi << 4) | lo) as u8);
        i += 2;
    }
    Ok(out)
}
