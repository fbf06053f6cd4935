//! The `hash` vindex: keyspace id = SipHash-2-4 (all-zero key) of the value's canonical bytes.
//!
//! Semantics, fixed forever (rows are placed by it; changing it misplaces every row):
//!
//! ```text
//! keyspace_id(v) = SipHash-2-4(k0 = 0, k1 = 0, canonical_bytes(v))   -- a u64, used as is
//! ```
//!
//! * SipHash-2-4 as specified by Aumasson and Bernstein (2012), checked against the 64
//!   reference vectors (see `siphash.rs`).
//! * Canonical bytes ([`Value::canonical_bytes`]): `int` (any width) → 8-byte big-endian two's
//!   complement; `text` → its UTF-8 bytes (bpchar without trailing spaces); `bytea` → the bytes;
//!   `uuid` → the 16 bytes in textual order; `timestamp`/`timestamptz` → 8-byte big-endian
//!   microseconds since 2000-01-01 (UTC for timestamptz). No type tag: a vindex has one column
//!   type, and two tables share a keyspace id (co-locate rows) only if they use the same vindex.
//!
//! Parameters: `column_type` (required: `int`, `text`, `bytea`, `uuid`, `timestamp`,
//! `timestamptz`). Cost 1; unique; not reversible (Vitess's `hash` is reversible because it
//! encrypts the 8-byte integer with 3DES; ours hashes, so the `numeric` vindex is the reversible
//! one). NULL: `map` → [`Destination::None`], `verify` → false, `map_for_insert` →
//! [`crate::Error::NullShardingKey`]. `map_one` does not allocate.
//!
//! Test vectors (also asserted in the tests below; value as an SQL literal → keyspace id):
//!
//! | column type | value | keyspace id |
//! |---|---|---|
//! | int | `0` | `e849e8bb6ffe2567` |
//! | int | `1` | `0a77dc4441ee47ba` |
//! | int | `42` | `260d52c3dc8ae7ab` |
//! | int | `-1` | `8050c18b6ac9d15e` |
//! | int | `9223372036854775807` | `aff0a63af1e33cf0` |
//! | text | `''` | `1e924b9d737700d7` |
//! | text | `'alice'` | `76211b47297fa5ef` |
//! | text | `'héllo'` | `67e28f68fedf61fd` |
//! | bytea | `'\xdeadbeef'` | `a3a20783b2c5a63a` |
//! | uuid | `'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'` | `1a19566e9cd2c27f` |
//! | timestamp | `'2000-01-01 00:00:00'` | `e849e8bb6ffe2567` |

use std::sync::Arc;

use crate::destination::Destination;
use crate::error::Result;
use crate::keyspace_id::KeyspaceId;
use crate::registry::VindexSpec;
use crate::siphash::{stable_hash, stable_hash_8};
use crate::value::{Canonical, ColumnType, Value};
use crate::vindex::{check_value, Hashing, SingleColumn, Vindex};

/// Type name in the VSchema.
pub const TYPE_NAME: &str = "hash";
pub(crate) const PARAMS: &[&str] = &["column_type"];

/// The keyspace id the `hash` vindex gives a value (`None` for NULL). The value is hashed as
/// is; canonicalize it to the column type first (see `value.rs`).
#[inline]
#[must_use]
pub fn hash_value(value: &Value) -> Option<KeyspaceId> {
    let hash = match value.canonical_bytes()? {
        Canonical::Word(word) => stable_hash_8(word),
        Canonical::Slice(bytes) => stable_hash(bytes),
    };
    Some(KeyspaceId::new(hash))
}

/// The `hash` vindex.
#[derive(Clone, Debug)]
pub struct HashVindex {
    name: String,
    column_type: ColumnType,
}

impl HashVindex {
    /// A hash vindex named `name` over a column of type `column_type`.
    #[must_use]
    pub fn new(name: impl Into<String>, column_type: ColumnType) -> Self {
        HashVindex { name: name.into(), column_type }
    }
}

pub(crate) fn build(spec: &VindexSpec<'_>) -> Result<Arc<dyn Vindex>> {
    Ok(Arc::new(HashVindex::new(spec.name(), spec.column_type()?)))
}

impl Vindex for HashVindex {
    fn name(&self) -> &str {
        &self.name
    }
    fn type_name(&self) -> &'static str {
        TYPE_NAME
    }
    fn column_type(&self) -> ColumnType {
        self.column_type
    }
    fn cost(&self) -> u32 {
        1
    }
    fn is_unique(&self) -> bool {
        true
    }
    fn as_single_column(&self) -> Option<&dyn SingleColumn> {
        Some(self)
    }
    fn as_hashing(&self) -> Option<&dyn Hashing> {
        Some(self)
    }
}

impl SingleColumn for HashVindex {
    #[inline]
    fn map_one(&self, value: &Value) -> Result<Destination> {
        check_value(self, value)?;
        Ok(hash_value(value).map_or(Destination::None, Destination::KeyspaceId))
    }

    fn verify_one(&self, value: &Value, id: KeyspaceId) -> Result<bool> {
        check_value(self, value)?;
        Ok(hash_value(value) == Some(id))
    }
}

impl Hashing for HashVindex {
    fn hash(&self, value: &Value) -> Result<Option<KeyspaceId>> {
        check_value(self, value)?;
        Ok(hash_value(value))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::value::TypeOid;

    /// (column type, SQL literal, keyspace id): the table in the module docs.
    const VECTORS: &[(ColumnType, &str, &str)] = &[
        (ColumnType::Int, "0", "e849e8bb6ffe2567"),
        (ColumnType::Int, "1", "0a77dc4441ee47ba"),
        (ColumnType::Int, "42", "260d52c3dc8ae7ab"),
        (ColumnType::Int, "-1", "8050c18b6ac9d15e"),
        (ColumnType::Int, "9223372036854775807", "aff0a63af1e33cf0"),
        (ColumnType::Text, "''", "1e924b9d737700d7"),
        (ColumnType::Text, "'alice'", "76211b47297fa5ef"),
        (ColumnType::Text, "'héllo'", "67e28f68fedf61fd"),
        (ColumnType::Bytea, "'\\xdeadbeef'", "a3a20783b2c5a63a"),
        (ColumnType::Uuid, "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "1a19566e9cd2c27f"),
        (ColumnType::Timestamp, "'2000-01-01 00:00:00'", "e849e8bb6ffe2567"),
    ];

    #[test]
    fn golden_vectors() {
        for (ty, sql, want) in VECTORS {
            let v = Value::from_sql_literal(sql, *ty).unwrap();
            let got = HashVindex::new("h", *ty).map_one(&v).unwrap();
            assert_eq!(got, Destination::KeyspaceId(want.parse().unwrap()), "{ty} {sql}: got {got}");
        }
    }

    #[test]
    fn docs_table_matches_vectors() {
        let docs = include_str!("hash.rs");
        for (ty, sql, want) in VECTORS {
            let row = format!("| {ty} | `{sql}` | `{want}` |");
            assert!(docs.contains(&row), "module docs lack the row {row}");
        }
    }

    #[test]
    fn every_int_width_hashes_alike() {
        let h = HashVindex::new("h", ColumnType::Int);
        let a = Value::from_binary_param(Some(&7i16.to_be_bytes()), TypeOid::INT2, ColumnType::Int).unwrap();
        let b = Value::from_text_param(Some(b"7"), TypeOid::INT8, ColumnType::Int).unwrap();
        assert_eq!(h.map_one(&a).unwrap(), h.map_one(&b).unwrap());
    }

    #[test]
    fn null_and_wrong_types() {
        let h = HashVindex::new("h", ColumnType::Int);
        assert_eq!(h.map_one(&Value::Null).unwrap(), Destination::None);
        assert!(!h.verify_one(&Value::Null, KeyspaceId::MIN).unwrap());
        let err = h.map_for_insert(&Value::Null).unwrap_err().at_column("users", "id");
        assert_eq!(
            err.to_string(),
            "NULL value for sharding key column users.id (vindex h) on INSERT: every row needs a non-NULL sharding key"
        );
        let err = h.map_one(&Value::from("x")).unwrap_err();
        assert_eq!(err.to_string(), "vindex h expects int values, got text");
    }
}
