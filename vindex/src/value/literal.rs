//! SQL literals as the planner sees them.
//!
//! The planner usually has a parsed literal already (sqlparser's `Value::Number`,
//! `Value::SingleQuotedString`, ...) and can build a [`Literal`] directly. [`parse_sql_literal`]
//! reads the source text of one literal instead, for callers that only have text (and for
//! tests and configuration, e.g. range vindex boundaries).
//!
//! Accepted (PostgreSQL syntax, `standard_conforming_strings = on`, the default since 9.1):
//! `NULL`; numbers `42`, `-7`, `+3` (fractions and exponents are read but rejected for int
//! columns); strings `'it''s'`, escape strings `E'a\tb\x41\101\u00e9'`, dollar-quoted
//! `$$…$$` / `$tag$…$tag$`; a type on either side: `'…'::uuid`, `42::text`,
//! `timestamptz '…'`, `CHARACTER VARYING '…'`. Not accepted: `U&'…'`, bit strings `B'…'`/`X'…'`,
//! `CAST(… AS …)`, continuation of a string across lines, parameters (`$1`).

use std::borrow::Cow;

use crate::error::{Error, Result};
use crate::value::TypeOid;

/// One SQL literal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Literal<'a> {
    /// `NULL`.
    Null,
    /// A numeric constant, as written (`42`, `-7`, `1.5`).
    Number(&'a str),
    /// A string constant (type `unknown` until compared with a column), quotes removed and
    /// escapes applied.
    String(Cow<'a, str>),
    /// A constant with an explicit type: `'…'::uuid`, `timestamp '…'`, `42::int8`.
    Typed { oid: TypeOid, text: Cow<'a, str> },
}

fn bad(reason: &'static str) -> Error {
    Error::InvalidLiteral { reason }
}

/// The type OID for a type name in a cast or typed literal (modifiers like `(10)` ignored).
fn type_oid(name: &str) -> Result<TypeOid> {
    let lower = name.to_ascii_lowercase();
    let base = lower.split('(').next().unwrap_or_default();
    let normalized = base.split_whitespace().collect::<Vec<_>>().join(" ");
    let normalized = normalized.trim_start_matches("pg_catalog.");
    Ok(match normalized {
        "int2" | "smallint" => TypeOid::INT2,
        "int4" | "int" | "integer" => TypeOid::INT4,
        "int8" | "bigint" => TypeOid::INT8,
        "text" => TypeOid::TEXT,
        "varchar" | "character varying" => TypeOid::VARCHAR,
        "bpchar" | "char" | "character" => TypeOid::BPCHAR,
        "uuid" => TypeOid::UUID,
        "bytea" => TypeOid::BYTEA,
        "timestamp" | "timestamp without time zone" => TypeOid::TIMESTAMP,
        "timestamptz" | "timestamp with time zone" => TypeOid::TIMESTAMPTZ,
        _ => return Err(bad("unsupported type name in a typed literal or cast")),
    })
}

/// Read the source text of one SQL literal. See the module docs for the accepted syntax.
pub fn parse_sql_literal(sql: &str) -> Result<Literal<'_>> {
    let s = sql.trim();
    if s.eq_ignore_ascii_case("null") {
        return Ok(Literal::Null);
    }
    // Split off a trailing `::type` cast (outside any quotes: the cast follows the body).
    let (body, cast) = split_cast(s)?;
    let body = body.trim();
    let lit = if body.eq_ignore_ascii_case("null") { Literal::Null } else { parse_body(body)? };
    match (cast, lit) {
        (None, lit) => Ok(lit),
        (Some(_), Literal::Null) => Ok(Literal::Null),
        (Some(ty), Literal::Number(n)) => Ok(Literal::Typed { oid: type_oid(ty)?, text: Cow::Borrowed(n) }),
        (Some(ty), Literal::String(text)) => Ok(Literal::Typed { oid: type_oid(ty)?, text }),
        (Some(_), Literal::Typed { .. }) => Err(bad("more than one type on a literal")),
    }
}

/// `body::type` → (`body`, Some(`type`)); finds `::` after the end of a quoted body.
fn split_cast(s: &str) -> Result<(&str, Option<&str>)> {
    let body_end = match s.find(['\'', '$']) {
        Some(open) => {
            let escapes = s[..open].trim().eq_ignore_ascii_case("e");
            open + quoted_len(&s[open..], escapes)?
        }
        None => 0,
    };
    match s[body_end..].find("::") {
        Some(i) => {
            let at = body_end + i;
            Ok((&s[..at], Some(s[at + 2..].trim())))
        }
        None => Ok((s, None)),
    }
}

/// Length in bytes of the quoted string at the start of `s` (`'…'` or `$tag$…$tag$`);
/// `escapes` for the body of an `E'…'` string, where `\'` does not end the string.
pub(crate) fn quoted_len(s: &str, escapes: bool) -> Result<usize> {
    if let Some(rest) = s.strip_prefix('$') {
        let tag_len = rest.find('$').ok_or(bad("unterminated dollar quote"))?;
        let delim = &s[..tag_len + 2];
        let close = s[delim.len()..].find(delim).ok_or(bad("unterminated dollar quote"))?;
        return Ok(delim.len() + close + delim.len());
    }
    let bytes = s.as_bytes();
    let mut i = 1;
    while i < bytes.len() {
        if escapes && bytes[i] == b'\\' && i + 1 < bytes.len() {
            i += 2;
            continue;
        }
        if bytes[i] == b'\'' {
            if bytes.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            return Ok(i + 1);
        }
        i += 1;
    }
    Err(bad("unterminated quoted string"))
}

fn parse_body(s: &str) -> Result<Literal<'_>> {
    let first = *s.as_bytes().first().ok_or(bad("empty literal"))?;
    if first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.') {
        let ok = s.len() > 1 || first.is_ascii_digit();
        let valid =
            s[1..].bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
        if !ok || !valid {
            return Err(bad("malformed numeric literal"));
        }
        return Ok(Literal::Number(s));
    }
    if first == b'$' {
        return parse_dollar(s).map(|t| Literal::String(Cow::Borrowed(t)));
    }
    let open = s.find('\'').ok_or(bad("expected NULL, a number or a quoted string"))?;
    let prefix = s[..open].trim();
    let quoted = &s[open..];
    if prefix.eq_ignore_ascii_case("e") && open == 1 {
        return parse_escape_string(quoted).map(Literal::String);
    }
    if quoted_len(quoted, false)? != quoted.len() {
        return Err(bad("unexpected text after the closing quote"));
    }
    let inner = &quoted[1..quoted.len() - 1];
    let text = if inner.contains("''") { Cow::Owned(inner.replace("''", "'")) } else { Cow::Borrowed(inner) };
    if prefix.is_empty() {
        Ok(Literal::String(text))
    } else if prefix.eq_ignore_ascii_case("u&")
        || prefix.eq_ignore_ascii_case("b")
        || prefix.eq_ignore_ascii_case("x")
        || prefix.eq_ignore_ascii_case("n")
    {
        Err(bad("Unicode-escape, bit-string and national strings are not supported"))
    } else {
        Ok(Literal::Typed { oid: type_oid(prefix)?, text })
    }
}

fn parse_dollar(s: &str) -> Result<&str> {
    let tag_len = s[1..].find('$').ok_or(bad("unterminated dollar quote"))?;
    let tag = &s[1..=tag_len];
    let tag_ok = tag.is_empty()
        || (tag.chars().all(|c| c.is_alphanumeric() || c == '_')
            && !tag.starts_with(|c: char| c.is_ascii_digit()));
    if !tag_ok {
        return Err(bad("invalid dollar-quote tag (parameters such as $1 are not literals)"));
    }
    if quoted_len(s, false)? != s.len() {
        return Err(bad("unexpected text after the closing dollar quote"));
    }
    let delim_len = tag_len + 2;
    Ok(&s[delim_len..s.len() - delim_len])
}

/// `E'…'` with C-style escapes; the result must be valid UTF-8.
fn parse_escape_string(quoted: &str) -> Result<Cow<'_, str>> {
    if quoted_len(quoted, true)? != quoted.len() {
        return Err(bad("unexpected text after the closing quote"));
    }
    let inner = &quoted.as_bytes()[1..quoted.len() - 1];
    let mut out: Vec<u8> = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        let b = inner[i];
        if b == b'\'' {
            // `''` inside E'' is a quote (quoted_len guarantees it is doubled).
            out.push(b'\'');
            i += 2;
            continue;
        }
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        i += 1;
        let e = *inner.get(i).ok_or(bad("dangling backslash"))?;
        i += 1;
        match e {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'0'..=b'7' => {
                let (v, used) = radix_digits(&inner[i - 1..], 8, 3);
                out.push((v & 0xff) as u8);
                i += used - 1;
            }
            b'x' => {
                let (v, used) = radix_digits(&inner[i..], 16, 2);
                if used == 0 {
                    return Err(bad("\\x needs a hex digit"));
                }
                out.push(v as u8);
                i += used;
            }
            b'u' | b'U' => {
                let n = if e == b'u' { 4 } else { 8 };
                let (v, used) = radix_digits(&inner[i..], 16, n);
                if used != n {
                    return Err(bad("invalid Unicode escape"));
                }
                let ch = char::from_u32(v).ok_or(bad("invalid Unicode escape"))?;
                out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                i += used;
            }
            other => out.push(other),
        }
    }
    String::from_utf8(out).map(Cow::Owned).map_err(|_| bad("escape string is not valid UTF-8"))
}

/// Up to `max` leading digits of `radix`: (value, digits used).
fn radix_digits(s: &[u8], radix: u32, max: usize) -> (u32, usize) {
    let mut v = 0u32;
    let mut used = 0;
    for &b in s.iter().take(max) {
        match (b as char).to_digit(radix) {
            Some(d) => {
                v = v * radix + d;
                used += 1;
            }
            None => break,
        }
    }
    (v, used)
}
