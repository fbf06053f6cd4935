//! The crate's one error type.
//!
//! Every variant carries the names a person needs to find the problem (keyspace, table, column,
//! vindex, parameter, shard, key range) as structured fields. Values of sharding keys are never
//! copied into errors: they are query literals, and errors end up in logs.

use crate::key_range::KeyRange;
use crate::keyspace_id::KeyspaceId;
use crate::shard_map::ShardName;
use crate::value::{ColumnType, TypeOid};

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error a [`crate::LookupBackend`] implementation returns; the router wraps its own IO errors.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the sharding vocabulary.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- keyspace ids and key ranges -------------------------------------------------------
    /// A keyspace id or key range bound is not 2..=16 hex digits (an even number of them).
    #[error("invalid keyspace id {input:?}: {reason}")]
    InvalidKeyspaceId { input: String, reason: &'static str },

    /// A key range's text form is malformed or empty (`start >= end`).
    #[error("invalid key range {input:?}: {reason}")]
    InvalidKeyRange { input: String, reason: &'static str },

    /// `KeyRange::split(0)`.
    #[error("a key range must be split into at least one part")]
    ZeroSplit,

    /// The range holds fewer keyspace ids than the number of parts asked for.
    #[error("key range {range} is too small to split into {parts} parts")]
    KeyRangeTooSmall { range: KeyRange, parts: u32 },

    /// A set of key ranges is empty, so it covers nothing.
    #[error("no key ranges: the keyspace-id space is not covered")]
    NoKeyRanges,

    /// Part of the keyspace-id space is not covered by any range.
    #[error("{}", gap_message(.missing, .before, .after))]
    KeyRangeGap {
        /// The uncovered part.
        missing: KeyRange,
        /// The range that ends where the gap starts (none if the gap is at the start).
        before: Option<KeyRange>,
        /// The range that starts where the gap ends (none if the gap is at the end).
        after: Option<KeyRange>,
    },

    /// Two ranges share keyspace ids.
    #[error("overlap: {first} and {second}")]
    KeyRangeOverlap { first: KeyRange, second: KeyRange },

    // ---- values ----------------------------------------------------------------------------
    /// A value's text or binary form cannot be read as the column type.
    #[error("invalid {column_type} value: {reason}")]
    InvalidValue { column_type: ColumnType, reason: &'static str },

    /// An SQL literal could not be read (unsupported syntax or malformed).
    #[error("unsupported or malformed SQL literal: {reason}")]
    InvalidLiteral { reason: &'static str },

    /// A parameter's type cannot be compared with the column type without a cast PostgreSQL
    /// itself would reject (e.g. an `int8` parameter against a `text` column).
    #[error("a value of type {value_type} cannot be used for a {column_type} column")]
    TypeMismatch { column_type: ColumnType, value_type: &'static str },

    /// A parameter's type OID is not one the router can route on.
    #[error("parameter type oid {oid} is not supported for sharding keys")]
    UnsupportedType { oid: TypeOid },

    /// A value handed to a vindex does not have the vindex's column type.
    #[error("vindex {vindex} expects {column_type} values, got {value_type}")]
    WrongValueType { vindex: String, column_type: ColumnType, value_type: &'static str },

    // ---- vindexes --------------------------------------------------------------------------
    /// INSERT of a row whose sharding key is NULL: there is no shard for it.
    #[error(
        "NULL value for sharding key{} (vindex {vindex}) on INSERT: every row needs a non-NULL sharding key",
        column_suffix(.table, .column)
    )]
    NullShardingKey { vindex: String, table: Option<String>, column: Option<String> },

    /// INSERT of a row whose sharding key maps to no shard (e.g. below a range vindex's first
    /// boundary).
    #[error("no shard for the sharding key{} (vindex {vindex}): the value is outside every range", column_suffix(.table, .column))]
    NoShardForValue { vindex: String, table: Option<String>, column: Option<String> },

    /// `map` and `verify` were given slices of different lengths.
    #[error("vindex {vindex}: {values} values but {keyspace_ids} keyspace ids")]
    LengthMismatch { vindex: String, values: usize, keyspace_ids: usize },

    /// The registry has no constructor for this vindex type.
    #[error("vindex {vindex}: unknown vindex type {vindex_type:?}")]
    UnknownVindexType { vindex: String, vindex_type: String },

    /// A parameter the vindex type does not accept.
    #[error("vindex {vindex} (type {vindex_type}): unknown parameter {param:?} (accepted: {accepted})")]
    UnknownParam { vindex: String, vindex_type: String, param: String, accepted: String },

    /// A required parameter is absent.
    #[error("vindex {vindex} (type {vindex_type}): missing required parameter {param:?}")]
    MissingParam { vindex: String, vindex_type: String, param: &'static str },

    /// A parameter is present but its value is wrong.
    #[error("vindex {vindex} (type {vindex_type}): parameter {param:?}: {reason}")]
    InvalidParam { vindex: String, vindex_type: String, param: &'static str, reason: String },

    // ---- lookup vindexes -------------------------------------------------------------------
    /// The lookup backend (the router's connection to PostgreSQL) failed.
    #[error("lookup vindex {vindex}: backend error on table {table}")]
    LookupBackend {
        vindex: String,
        table: String,
        #[source]
        source: BackendError,
    },

    /// The backend answered with the wrong number of result sets.
    #[error("lookup vindex {vindex}: backend returned {got} results for {expected} values")]
    LookupResultCount { vindex: String, expected: usize, got: usize },

    /// A unique lookup table maps one value to several keyspace ids.
    #[error("unique lookup vindex {vindex}: table {table} maps one value to {count} keyspace ids")]
    LookupNotUnique { vindex: String, table: String, count: usize },

    /// INSERT into a unique lookup table of a value that already maps elsewhere: the secondary
    /// column's uniqueness would be violated.
    #[error("unique lookup vindex {vindex}: duplicate value in {table}: already maps to keyspace id {existing}, not {wanted}")]
    LookupDuplicate { vindex: String, table: String, existing: KeyspaceId, wanted: KeyspaceId },

    /// A lookup row that was just created could not be read back.
    #[error("lookup vindex {vindex}: row for keyspace id {wanted} missing from {table} after insert")]
    LookupRowMissing { vindex: String, table: String, wanted: KeyspaceId },

    // ---- shard map -------------------------------------------------------------------------
    /// A shard name is empty or contains whitespace or control characters.
    #[error("invalid shard name {name:?}: {reason}")]
    InvalidShardName { name: String, reason: &'static str },

    /// The keyspace is not in the shard map.
    #[error("unknown keyspace {keyspace}")]
    UnknownKeyspace { keyspace: String },

    /// The shard is not in the keyspace.
    #[error("keyspace {keyspace} has no shard {shard}")]
    UnknownShard { keyspace: String, shard: ShardName },

    /// Two shards of a keyspace have the same name.
    #[error("keyspace {keyspace}: shard name {shard} used twice")]
    DuplicateShardName { keyspace: String, shard: ShardName },

    /// A key range problem inside one keyspace of the shard map.
    #[error("keyspace {keyspace}: {source}")]
    InKeyspace {
        keyspace: String,
        #[source]
        source: Box<Error>,
    },

    /// A split was asked for with fewer than two new shards.
    #[error("keyspace {keyspace}: splitting shard {shard} needs at least 2 new shard names, got {got}")]
    SplitTooFewShards { keyspace: String, shard: ShardName, got: usize },

    /// The shard map version cannot be incremented.
    #[error("shard map version {version} cannot be incremented")]
    VersionOverflow { version: u64 },

    // ---- VSchema ---------------------------------------------------------------------------
    /// A table names a vindex the keyspace does not define.
    #[error("keyspace {keyspace}, table {table}, column {column}: unknown vindex {vindex}")]
    UnknownVindex { keyspace: String, table: String, column: String, vindex: String },

    /// A table in a sharded keyspace has no column vindex.
    #[error("keyspace {keyspace}, table {table}: a table in a sharded keyspace needs a primary vindex (the first entry of column_vindexes)")]
    NoPrimaryVindex { keyspace: String, table: String },

    /// The primary vindex must map each value to exactly one keyspace id.
    #[error("keyspace {keyspace}, table {table}, column {column}: primary vindex {vindex} is not unique")]
    PrimaryVindexNotUnique { keyspace: String, table: String, column: String, vindex: String },

    /// The primary vindex must compute the keyspace id of a new row without a lookup.
    #[error("keyspace {keyspace}, table {table}, column {column}: primary vindex {vindex} needs a lookup table; a primary vindex must compute keyspace ids by itself")]
    PrimaryVindexNeedsLookup { keyspace: String, table: String, column: String, vindex: String },

    /// The same (column, vindex) pair is listed twice for a table.
    #[error("keyspace {keyspace}, table {table}, column {column}: vindex {vindex} listed twice")]
    DuplicateColumnVindex { keyspace: String, table: String, column: String, vindex: String },

    /// An unsharded keyspace defines vindexes or gives a table column vindexes.
    #[error("keyspace {keyspace}{}: an unsharded keyspace has no vindexes", table_suffix(.table))]
    VindexInUnshardedKeyspace { keyspace: String, table: Option<String> },

    /// A reference table (copied to every shard) only makes sense in a sharded keyspace.
    #[error("keyspace {keyspace}, table {table}: reference table in an unsharded keyspace (a reference table is copied to every shard of a sharded keyspace; in an unsharded keyspace declare it as a normal table)")]
    ReferenceTableInUnshardedKeyspace { keyspace: String, table: String },

    /// Reference and sequence tables are not placed by vindexes.
    #[error("keyspace {keyspace}, table {table}: a {kind} table cannot have column vindexes")]
    VindexOnSpecialTable { keyspace: String, table: String, kind: &'static str },

    /// Sequences hold one row of global state, so they live in an unsharded keyspace.
    #[error("keyspace {keyspace}, table {table}: sequence tables must be in an unsharded keyspace")]
    SequenceInShardedKeyspace { keyspace: String, table: String },

    /// Two keyspaces define the same table name; unqualified names would be ambiguous.
    #[error("table {table} is defined in keyspace {first} and in keyspace {second}")]
    TableInMultipleKeyspaces { table: String, first: String, second: String },

    /// `auto_increment.sequence` names no table.
    #[error("keyspace {keyspace}, table {table}: unknown sequence {sequence}")]
    UnknownSequence { keyspace: String, table: String, sequence: String },

    /// `auto_increment.sequence` names a table that is not a sequence.
    #[error("keyspace {keyspace}, table {table}: {sequence} is not a sequence table")]
    NotASequence { keyspace: String, table: String, sequence: String },

    /// A vindex definition could not be built (unknown type, bad parameters).
    #[error("keyspace {keyspace}, vindex {vindex}: {source}")]
    InvalidVindex {
        keyspace: String,
        vindex: String,
        #[source]
        source: Box<Error>,
    },

    /// A vindex's `owner` is wrong: unknown table, a table not using it, or not a lookup vindex.
    #[error("keyspace {keyspace}, vindex {vindex}: owner {owner}: {reason}")]
    InvalidOwner { keyspace: String, vindex: String, owner: String, reason: &'static str },

    /// The VSchema and the shard map disagree (missing keyspace, unsharded keyspace with several
    /// shards).
    #[error("keyspace {keyspace}: {reason}")]
    ShardMapMismatch { keyspace: String, reason: &'static str },

    // ---- documents -------------------------------------------------------------------------
    /// TOML that does not parse or does not match the schema.
    #[error("TOML: {0}")]
    TomlDe(#[from] toml::de::Error),

    /// Serializing to TOML failed.
    #[error("TOML: {0}")]
    TomlSer(#[from] toml::ser::Error),

    /// JSON that does not parse or does not match the schema (or serialization failed).
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// A low-cardinality label for metrics and logs.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        use Error::*;
        match self {
            InvalidKeyspaceId { .. } | InvalidKeyRange { .. } | ZeroSplit | KeyRangeTooSmall { .. } => {
                "key_range"
            }
            NoKeyRanges | KeyRangeGap { .. } | KeyRangeOverlap { .. } => "key_range_cover",
            InvalidValue { .. } | InvalidLiteral { .. } | TypeMismatch { .. } | UnsupportedType { .. } => {
                "value"
            }
            NullShardingKey { .. } => "null_sharding_key",
            NoShardForValue { .. } => "no_shard_for_value",
            LookupDuplicate { .. } => "lookup_duplicate",
            LookupBackend { .. } => "lookup_backend",
            LookupResultCount { .. } | LookupNotUnique { .. } | LookupRowMissing { .. } => {
                "lookup_inconsistent"
            }
            WrongValueType { .. } | LengthMismatch { .. } => "vindex_usage",
            UnknownVindexType { .. } | UnknownParam { .. } | MissingParam { .. } | InvalidParam { .. } => {
                "vindex_config"
            }
            InvalidShardName { .. }
            | UnknownKeyspace { .. }
            | UnknownShard { .. }
            | DuplicateShardName { .. }
            | InKeyspace { .. }
            | SplitTooFewShards { .. }
            | VersionOverflow { .. }
            | ShardMapMismatch { .. } => "shard_map",
            UnknownVindex { .. }
            | NoPrimaryVindex { .. }
            | PrimaryVindexNotUnique { .. }
            | PrimaryVindexNeedsLookup { .. }
            | DuplicateColumnVindex { .. }
            | VindexInUnshardedKeyspace { .. }
            | ReferenceTableInUnshardedKeyspace { .. }
            | VindexOnSpecialTable { .. }
            | SequenceInShardedKeyspace { .. }
            | TableInMultipleKeyspaces { .. }
            | UnknownSequence { .. }
            | NotASequence { .. }
            | InvalidVindex { .. }
            | InvalidOwner { .. } => "vschema",
            TomlDe(_) | TomlSer(_) | Json(_) => "document",
        }
    }

    /// The SQLSTATE to report if the error reaches a client (PostgreSQL's
    /// `src/backend/utils/errcodes.txt`): 23502 not_null_violation for a NULL sharding key,
    /// 23514 check_violation for a key outside every range (as PostgreSQL does for a row that
    /// fits no partition), 23505 unique_violation for a duplicate unique-lookup value, 42883
    /// for a type mismatch (PostgreSQL's "operator does not exist"), 22P02 for malformed
    /// values, 0A000 for what the router does not support, 22023 for bad admin input, 58000 for
    /// lookup backend failures, F0000 for configuration documents, XX000 for broken invariants.
    #[must_use]
    pub fn sqlstate(&self) -> &'static str {
        match self.kind() {
            "null_sharding_key" => "23502",
            "no_shard_for_value" => "23514",
            "lookup_duplicate" => "23505",
            "lookup_backend" => "58000",
            "lookup_inconsistent" | "vindex_usage" => "XX000",
            "key_range" => "22023",
            "value" => match self {
                Error::TypeMismatch { .. } => "42883",
                Error::InvalidValue { .. } => "22P02",
                _ => "0A000",
            },
            "shard_map" => match self {
                Error::UnknownKeyspace { .. } | Error::UnknownShard { .. } => "22023",
                _ => "F0000",
            },
            _ => "F0000",
        }
    }

    /// Attach the table and column a sharding-key error is about (for `NullShardingKey` and
    /// `NoShardForValue`); other errors are returned unchanged. The planner knows the names, the
    /// vindex does not.
    #[must_use]
    pub fn at_column(self, table_name: &str, column_name: &str) -> Self {
        match self {
            Error::NullShardingKey { vindex, .. } => Error::NullShardingKey {
                vindex,
                table: Some(table_name.to_owned()),
                column: Some(column_name.to_owned()),
            },
            Error::NoShardForValue { vindex, .. } => Error::NoShardForValue {
                vindex,
                table: Some(table_name.to_owned()),
                column: Some(column_name.to_owned()),
            },
            other => other,
        }
    }
}

fn gap_message(missing: &KeyRange, before: &Option<KeyRange>, after: &Option<KeyRange>) -> String {
    match (before, after) {
        (Some(b), Some(a)) => format!("gap between {b} and {a}: {missing} is not covered"),
        (None, Some(a)) => format!("gap before {a}: {missing} is not covered"),
        (Some(b), None) => format!("gap after {b}: {missing} is not covered"),
        (None, None) => format!("gap: {missing} is not covered"),
    }
}

fn column_suffix(table: &Option<String>, column: &Option<String>) -> String {
    match (table, column) {
        (Some(t), Some(c)) => format!(" column {t}.{c}"),
        (None, Some(c)) => format!(" column {c}"),
        (Some(t), None) => format!(" of table {t}"),
        (None, None) => String::new(),
    }
}

fn table_suffix(table: &Option<String>) -> String {
    table.as_ref().map(|t| format!(", table {t}")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sqlstates_for_client_facing_errors() {
        let null =
            Error::NullShardingKey { vindex: "h".into(), table: None, column: None }.at_column("users", "id");
        assert_eq!((null.kind(), null.sqlstate()), ("null_sharding_key", "23502"));
        assert!(null.to_string().contains("column users.id"));
        let dup = Error::LookupDuplicate {
            vindex: "l".into(),
            table: "t".into(),
            existing: KeyspaceId::new(1),
            wanted: KeyspaceId::new(2),
        };
        assert_eq!(dup.sqlstate(), "23505");
        let mismatch = Error::TypeMismatch { column_type: ColumnType::Text, value_type: "int8" };
        assert_eq!((mismatch.kind(), mismatch.sqlstate()), ("value", "42883"));
        let cover = Error::NoKeyRanges;
        assert_eq!((cover.kind(), cover.sqlstate()), ("key_range_cover", "F0000"));
        // at_column leaves other errors alone.
        assert!(matches!(Error::NoKeyRanges.at_column("t", "c"), Error::NoKeyRanges));
    }
}
