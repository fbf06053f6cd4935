//! `Value`: a sharding-key value, canonicalized to its column's declared type.
//!
//! The same key reaches the router in many shapes: an SQL literal (`42`, `'42'`, `'42'::int8`),
//! a text-format bind parameter typed `int4` or untyped, a binary-format `int2`... A vindex must
//! send all of them to the same shard, so every vindex declares a [`ColumnType`] and the
//! constructors here convert each shape into the one canonical [`Value`] of that type: `int2`,
//! `int4` and `int8` all become [`Value::Int`], `bpchar` drops trailing spaces as PostgreSQL's
//! `bpchar`→`text` cast does, timestamps become microseconds since 2000-01-01 (PostgreSQL's
//! internal form).
//!
//! Conversions follow PostgreSQL's rules for comparing the parameter with a column of that type:
//! where PostgreSQL would reject the comparison (`text_col = 42`) the constructor returns
//! [`Error::TypeMismatch`]; where the result would depend on session state the router does not
//! track (`timestamptz_col = '2024-01-01 00:00'` depends on `TimeZone`) it returns
//! [`Error::InvalidValue`]. A caller that gets an error for a value must not guess a shard: it
//! can send the statement to all shards (or let PostgreSQL raise its own error).

mod literal;
mod text;
mod timestamp;

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

pub(crate) use literal::quoted_len;
pub use literal::{parse_sql_literal, Literal};
pub(crate) use text::format_uuid;

/// The declared type of a sharding-key column (a vindex's input type).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ColumnType {
    /// `smallint`, `integer`, `bigint` (all read as `i64`).
    Int,
    /// `text`, `varchar`, `char(n)` (UTF-8).
    Text,
    /// `bytea`.
    Bytea,
    /// `uuid`.
    Uuid,
    /// `timestamp` (without time zone).
    Timestamp,
    /// `timestamptz` (stored as UTC). Separate from `Timestamp` because PostgreSQL reads the
    /// same text differently for the two types (it ignores a UTC offset for `timestamp`).
    TimestampTz,
}

impl ColumnType {
    /// The canonical name, as accepted in vindex parameters.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::Int => "int",
            ColumnType::Text => "text",
            ColumnType::Bytea => "bytea",
            ColumnType::Uuid => "uuid",
            ColumnType::Timestamp => "timestamp",
            ColumnType::TimestampTz => "timestamptz",
        }
    }

    /// The PostgreSQL type used for this column in generated SQL (lookup tables).
    #[must_use]
    pub fn sql_type(self) -> &'static str {
        match self {
            ColumnType::Int => "bigint",
            other => other.as_str(),
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ColumnType {
    type Err = &'static str;

    /// Canonical names plus the usual PostgreSQL spellings (`bigint`, `varchar`, ...).
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "int" | "int2" | "int4" | "int8" | "smallint" | "integer" | "bigint" => ColumnType::Int,
            "text" | "varchar" | "character varying" | "char" | "character" | "bpchar" => ColumnType::Text,
            "bytea" => ColumnType::Bytea,
            "uuid" => ColumnType::Uuid,
            "timestamp" | "timestamp without time zone" => ColumnType::Timestamp,
            "timestamptz" | "timestamp with time zone" => ColumnType::TimestampTz,
            _ => return Err("expected int, text, bytea, uuid, timestamp or timestamptz"),
        })
    }
}

impl Serialize for ColumnType {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ColumnType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A PostgreSQL type OID as sent in Parse/Bind (`pg_type.oid`; values from PostgreSQL's
/// `src/include/catalog/pg_type.dat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TypeOid(pub u32);

impl TypeOid {
    /// Unspecified: the server infers the type from context.
    pub const UNKNOWN: TypeOid = TypeOid(0);
    /// `bytea`.
    pub const BYTEA: TypeOid = TypeOid(17);
    /// `int8` / `bigint`.
    pub const INT8: TypeOid = TypeOid(20);
    /// `int2` / `smallint`.
    pub const INT2: TypeOid = TypeOid(21);
    /// `int4` / `integer`.
    pub const INT4: TypeOid = TypeOid(23);
    /// `text`.
    pub const TEXT: TypeOid = TypeOid(25);
    /// `bpchar` / `char(n)`.
    pub const BPCHAR: TypeOid = TypeOid(1042);
    /// `varchar`.
    pub const VARCHAR: TypeOid = TypeOid(1043);
    /// `timestamp`.
    pub const TIMESTAMP: TypeOid = TypeOid(1114);
    /// `timestamptz`.
    pub const TIMESTAMPTZ: TypeOid = TypeOid(1184);
    /// `uuid`.
    pub const UUID: TypeOid = TypeOid(2950);

    fn name(self) -> &'static str {
        match self {
            Self::UNKNOWN => "unknown",
            Self::BYTEA => "bytea",
            Self::INT8 => "int8",
            Self::INT2 => "int2",
            Self::INT4 => "int4",
            Self::TEXT => "text",
            Self::BPCHAR => "bpchar",
            Self::VARCHAR => "varchar",
            Self::TIMESTAMP => "timestamp",
            Self::TIMESTAMPTZ => "timestamptz",
            Self::UUID => "uuid",
            _ => "unsupported",
        }
    }
}

impl fmt::Display for TypeOid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.0, self.name())
    }
}

/// A sharding-key value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Value {
    /// SQL NULL: equal to nothing, so it maps to no shard for reads.
    Null,
    /// Any integer width.
    Int(i64),
    /// Text (bpchar without its trailing spaces).
    Text(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// The 16 bytes of a UUID in their textual order.
    Uuid([u8; 16]),
    /// Microseconds since 2000-01-01 00:00:00 (UTC for `timestamptz`), as PostgreSQL stores it;
    /// `i64::MAX`/`i64::MIN` are `infinity`/`-infinity`.
    Timestamp(i64),
}

/// The bytes a hash function sees for a value (see [`Value::canonical_bytes`]).
#[derive(Clone, Copy, Debug)]
pub enum Canonical<'a> {
    /// Borrowed from the value (text, bytes, uuid).
    Slice(&'a [u8]),
    /// An 8-byte big-endian integer (int, timestamp).
    Word([u8; 8]),
}

impl AsRef<[u8]> for Canonical<'_> {
    fn as_ref(&self) -> &[u8] {
        match self {
            Canonical::Slice(s) => s,
            Canonical::Word(w) => w,
        }
    }
}

impl Value {
    /// Is this NULL?
    #[must_use]
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// A short name of the value's variant, for error messages.
    #[must_use]
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Int(_) => "int",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytea",
            Value::Uuid(_) => "uuid",
            Value::Timestamp(_) => "timestamp",
        }
    }

    /// Can this value be a key of a column of type `ty`? NULL fits every type.
    #[must_use]
    pub fn fits(&self, ty: ColumnType) -> bool {
        matches!(
            (self, ty),
            (Value::Null, _)
                | (Value::Int(_), ColumnType::Int)
                | (Value::Text(_), ColumnType::Text)
                | (Value::Bytes(_), ColumnType::Bytea)
                | (Value::Uuid(_), ColumnType::Uuid)
                | (Value::Timestamp(_), ColumnType::Timestamp | ColumnType::TimestampTz)
        )
    }

    /// The canonical byte encoding hashed by the `hash` and `consistent_hash` vindexes; `None`
    /// for NULL. Stable forever:
    ///
    /// | value | bytes |
    /// |---|---|
    /// | `Int(i)` | 8-byte big-endian two's complement of `i` |
    /// | `Text(s)` | the UTF-8 bytes of `s` (no terminator, no length) |
    /// | `Bytes(b)` | `b` itself |
    /// | `Uuid(u)` | the 16 bytes in textual order |
    /// | `Timestamp(t)` | 8-byte big-endian two's complement of the microseconds |
    #[must_use]
    pub fn canonical_bytes(&self) -> Option<Canonical<'_>> {
        match self {
            Value::Null => None,
            Value::Int(i) | Value::Timestamp(i) => Some(Canonical::Word(i.to_be_bytes())),
            Value::Text(s) => Some(Canonical::Slice(s.as_bytes())),
            Value::Bytes(b) => Some(Canonical::Slice(b)),
            Value::Uuid(u) => Some(Canonical::Slice(u)),
        }
    }

    /// Order two values of the same variant (integers numerically, text and bytes bytewise, i.e.
    /// PostgreSQL's `C` collation, uuids bytewise as PostgreSQL does, timestamps in time).
    /// `None` for different variants or NULL.
    #[must_use]
    pub fn compare(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) | (Value::Timestamp(a), Value::Timestamp(b)) => Some(a.cmp(b)),
            (Value::Text(a), Value::Text(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
            (Value::Bytes(a), Value::Bytes(b)) => Some(a.cmp(b)),
            (Value::Uuid(a), Value::Uuid(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }

    /// From a literal the planner extracted from the SQL text (see [`Literal`]), for a column of
    /// type `column`. A quoted literal is PostgreSQL's `unknown` type and is read as the column
    /// type; a number is only valid for an int column; a typed literal follows its type.
    pub fn from_literal(lit: &Literal<'_>, column: ColumnType) -> Result<Value> {
        match lit {
            Literal::Null => Ok(Value::Null),
            Literal::Number(n) => {
                if column != ColumnType::Int {
                    return Err(Error::TypeMismatch { column_type: column, value_type: "numeric literal" });
                }
                text::parse_sql_integer(n).map(Value::Int)
            }
            Literal::String(s) => from_typed_text(s, TypeOid::UNKNOWN, column),
            Literal::Typed { oid, text } => from_typed_text(text, *oid, column),
        }
    }

    /// From SQL literal source text as it appears in a statement: `42`, `-7`, `NULL`, `'abc'`,
    /// `'it''s'`, `E'a\tb'`, `$$x$$`, `'…'::uuid`, `timestamptz '…'`. See [`parse_sql_literal`].
    pub fn from_sql_literal(sql: &str, column: ColumnType) -> Result<Value> {
        // Plain digits, the most common key literal, are a number as they stand.
        if !sql.is_empty() && sql.bytes().all(|b| b.is_ascii_digit()) {
            return Self::from_literal(&Literal::Number(sql), column);
        }
        let lit = parse_sql_literal(sql)?;
        Self::from_literal(&lit, column)
    }

    /// From a text-format Bind parameter (`None` = the protocol's NULL, length -1) declared with
    /// type `oid` ([`TypeOid::UNKNOWN`] if the client left it to the server), for a column of
    /// type `column`.
    pub fn from_text_param(raw: Option<&[u8]>, oid: TypeOid, column: ColumnType) -> Result<Value> {
        let Some(raw) = raw else {
            return Ok(Value::Null);
        };
        let s = std::str::from_utf8(raw).map_err(|_| Error::InvalidValue {
            column_type: column,
            reason: "text parameter is not valid UTF-8",
        })?;
        from_typed_text(s, oid, column)
    }

    /// From a binary-format Bind parameter (`None` = NULL) declared with type `oid`, for a
    /// column of type `column`. With [`TypeOid::UNKNOWN`] the bytes are read in the column
    /// type's binary format, as the server would.
    pub fn from_binary_param(raw: Option<&[u8]>, oid: TypeOid, column: ColumnType) -> Result<Value> {
        let Some(raw) = raw else {
            return Ok(Value::Null);
        };
        let effective = if oid == TypeOid::UNKNOWN {
            match column {
                ColumnType::Int => match raw.len() {
                    2 => TypeOid::INT2,
                    4 => TypeOid::INT4,
                    _ => TypeOid::INT8,
                },
                ColumnType::Text => TypeOid::TEXT,
                ColumnType::Bytea => TypeOid::BYTEA,
                ColumnType::Uuid => TypeOid::UUID,
                ColumnType::Timestamp => TypeOid::TIMESTAMP,
                ColumnType::TimestampTz => TypeOid::TIMESTAMPTZ,
            }
        } else {
            oid
        };
        check_oid_fits(effective, column)?;
        let bad_len = |reason| Error::InvalidValue { column_type: column, reason };
        Ok(match effective {
            TypeOid::INT2 => Value::Int(
                i16::from_be_bytes(raw.try_into().map_err(|_| bad_len("binary int2 must be 2 bytes"))?)
                    .into(),
            ),
            TypeOid::INT4 => Value::Int(
                i32::from_be_bytes(raw.try_into().map_err(|_| bad_len("binary int4 must be 4 bytes"))?)
                    .into(),
            ),
            TypeOid::INT8 => Value::Int(i64::from_be_bytes(
                raw.try_into().map_err(|_| bad_len("binary int8 must be 8 bytes"))?,
            )),
            TypeOid::TEXT | TypeOid::VARCHAR | TypeOid::BPCHAR => {
                let s = std::str::from_utf8(raw)
                    .map_err(|_| bad_len("binary text parameter is not valid UTF-8"))?;
                text_value(s, effective)
            }
            TypeOid::BYTEA => Value::Bytes(raw.to_vec()),
            TypeOid::UUID => {
                Value::Uuid(raw.try_into().map_err(|_| bad_len("binary uuid must be 16 bytes"))?)
            }
            // TIMESTAMP or TIMESTAMPTZ (check_oid_fits let nothing else through).
            _ => Value::Timestamp(i64::from_be_bytes(
                raw.try_into().map_err(|_| bad_len("binary timestamp must be 8 bytes"))?,
            )),
        })
    }
}

/// Text (bpchar loses its trailing spaces, as in PostgreSQL's `bpchar` to `text` cast).
fn text_value(s: &str, oid: TypeOid) -> Value {
    if oid == TypeOid::BPCHAR {
        Value::Text(s.trim_end_matches(' ').to_owned())
    } else {
        Value::Text(s.to_owned())
    }
}

/// Is a parameter of type `oid` comparable with a `column` without session-dependent casts?
fn check_oid_fits(oid: TypeOid, column: ColumnType) -> Result<()> {
    let wanted = match oid {
        TypeOid::UNKNOWN => return Ok(()),
        TypeOid::INT2 | TypeOid::INT4 | TypeOid::INT8 => ColumnType::Int,
        TypeOid::TEXT | TypeOid::VARCHAR | TypeOid::BPCHAR => ColumnType::Text,
        TypeOid::BYTEA => ColumnType::Bytea,
        TypeOid::UUID => ColumnType::Uuid,
        TypeOid::TIMESTAMP => ColumnType::Timestamp,
        TypeOid::TIMESTAMPTZ => ColumnType::TimestampTz,
        other => return Err(Error::UnsupportedType { oid: other }),
    };
    match (wanted, column) {
        (a, b) if a == b => Ok(()),
        (ColumnType::Timestamp, ColumnType::TimestampTz)
        | (ColumnType::TimestampTz, ColumnType::Timestamp) => Err(Error::InvalidValue {
            column_type: column,
            reason: "comparing timestamp with timestamptz depends on the session TimeZone",
        }),
        _ => Err(Error::TypeMismatch { column_type: column, value_type: oid.name() }),
    }
}

/// Read text whose type is `oid` (or unknown) as a key of a `column` column.
fn from_typed_text(s: &str, oid: TypeOid, column: ColumnType) -> Result<Value> {
    check_oid_fits(oid, column)?;
    let invalid = |reason| Error::InvalidValue { column_type: column, reason };
    Ok(match column {
        ColumnType::Int => {
            let (min, max) = match oid {
                TypeOid::INT2 => (i16::MIN.into(), i16::MAX.into()),
                TypeOid::INT4 => (i32::MIN.into(), i32::MAX.into()),
                _ => (i64::MIN, i64::MAX),
            };
            Value::Int(text::parse_int(s, min, max).map_err(invalid)?)
        }
        ColumnType::Text => text_value(s, oid),
        ColumnType::Bytea => Value::Bytes(text::parse_bytea(s).map_err(invalid)?),
        ColumnType::Uuid => Value::Uuid(text::parse_uuid(s).map_err(invalid)?),
        ColumnType::Timestamp => {
            Value::Timestamp(timestamp::parse_timestamp(s, timestamp::Zone::Ignore).map_err(invalid)?)
        }
        ColumnType::TimestampTz => {
            Value::Timestamp(timestamp::parse_timestamp(s, timestamp::Zone::Required).map_err(invalid)?)
        }
    })
}

impl Value {
    /// An SQL expression of type `column` for the value that reads the same whatever the
    /// session's settings (`standard_conforming_strings`, `DateStyle`, `TimeZone`): text and
    /// bytes travel as hex, timestamps in ISO form (UTC for `timestamptz`). Used in the SQL the
    /// router sends to lookup and owner tables on connections carrying a client's settings.
    #[must_use]
    pub fn portable_literal(&self, column: ColumnType) -> String {
        fn hex(bytes: &[u8]) -> String {
            use std::fmt::Write as _;
            let mut out = String::with_capacity(bytes.len() * 2);
            for b in bytes {
                let _ = write!(out, "{b:02x}");
            }
            out
        }
        let ty = column.sql_type();
        match self {
            Value::Null => format!("NULL::{ty}"),
            Value::Int(i) => format!("({i})::{ty}"),
            Value::Text(s) => format!("convert_from(decode('{}', 'hex'), 'UTF8')::{ty}", hex(s.as_bytes())),
            Value::Bytes(b) => format!("decode('{}', 'hex')", hex(b)),
            Value::Uuid(u) => format!("'{}'::uuid", format_uuid(u)),
            Value::Timestamp(t) => {
                let zone = if column == ColumnType::TimestampTz && *t != i64::MAX && *t != i64::MIN {
                    "+00"
                } else {
                    ""
                };
                format!("'{}{zone}'::{ty}", timestamp::format_timestamp(*t))
            }
        }
    }
}

impl fmt::Display for Value {
    /// An SQL literal for the value (`NULL`, `42`, `'it''s'`, `'\x00ff'`, `'…uuid…'`,
    /// `'2024-01-02 03:04:05.000006'`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Text(s) => write!(f, "'{}'", s.replace('\'', "''")),
            Value::Bytes(b) => {
                f.write_str("'\\x")?;
                for byte in b {
                    write!(f, "{byte:02x}")?;
                }
                f.write_str("'")
            }
            Value::Uuid(u) => write!(f, "'{}'", format_uuid(u)),
            Value::Timestamp(t) => write!(f, "'{}'", timestamp::format_timestamp(*t)),
        }
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}

impl From<Cow<'_, str>> for Value {
    fn from(s: Cow<'_, str>) -> Self {
        Value::Text(s.into_owned())
    }
}

#[cfg(test)]
mod tests;
