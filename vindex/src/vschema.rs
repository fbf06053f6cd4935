//! `VSchema`: keyspaces, their vindexes and tables (TOML or JSON document), and its validation.
//!
//! * A keyspace is `sharded` (tables spread over shards by vindexes) or not (one shard).
//! * A sharded keyspace defines vindexes (`name → type + params`) and tables. Each normal table
//!   lists `column_vindexes`; the first is the **primary** vindex, which computes the keyspace
//!   id of every row, so it must be unique and computable without a lookup. The others are
//!   secondary vindexes the planner may use to route queries on other columns.
//! * `type = "reference"` tables are copied in full to every shard of a sharded keyspace
//!   (reads go to any shard, writes are broadcast).
//! * `type = "sequence"` tables live in an unsharded keyspace and hand out global ids; a sharded
//!   table's `auto_increment = { column, sequence }` fills that column from the sequence
//!   (`sequence` is `table` or `keyspace.table`).
//! * A lookup vindex's `owner` is the table whose writes maintain the lookup table.
//! * Table names are unique across keyspaces, so unqualified names in SQL are unambiguous.
//!
//! [`VSchema::validate`] builds every vindex (through a [`Registry`]) and checks all of the
//! above, naming the keyspace, table, column and vindex at fault.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};
use crate::registry::{Params, Registry};
use crate::shard_map::ShardMap;
use crate::vindex::Vindex;

/// The VSchema document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VSchema {
    /// Keyspace name → definition.
    #[serde(default)]
    pub keyspaces: BTreeMap<String, KeyspaceDef>,
}

/// One keyspace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyspaceDef {
    /// Spread over several shards by vindexes (default: false, one shard).
    #[serde(default)]
    pub sharded: bool,
    /// Vindex name → definition (sharded keyspaces only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vindexes: BTreeMap<String, VindexDef>,
    /// Table name → definition.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tables: BTreeMap<String, TableDef>,
}

/// A vindex definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VindexDef {
    /// Registry type name (`hash`, `range`, `consistent_hash`, `lookup_unique`, ...).
    #[serde(rename = "type")]
    pub type_name: String,
    /// Type-specific parameters; TOML integers and booleans are accepted and kept as text.
    #[serde(default, deserialize_with = "deserialize_params", skip_serializing_if = "BTreeMap::is_empty")]
    pub params: Params,
    /// For lookup vindexes: the table whose INSERT/UPDATE/DELETE maintain the lookup table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// What a table is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    /// Sharded by its primary vindex (in a sharded keyspace) or plain (in an unsharded one).
    #[default]
    Normal,
    /// Copied to every shard of a sharded keyspace.
    Reference,
    /// A global id generator (unsharded keyspace).
    Sequence,
}

impl TableKind {
    fn is_normal(&self) -> bool {
        *self == TableKind::Normal
    }

    fn as_str(self) -> &'static str {
        match self {
            TableKind::Normal => "normal",
            TableKind::Reference => "reference",
            TableKind::Sequence => "sequence",
        }
    }
}

/// A table definition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableDef {
    /// `normal` (default), `reference` or `sequence`.
    #[serde(default, rename = "type", skip_serializing_if = "TableKind::is_normal")]
    pub kind: TableKind,
    /// Column vindexes; the first is the primary vindex.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub column_vindexes: Vec<ColumnVindexDef>,
    /// A column filled from a sequence on INSERT when the client does not give it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_increment: Option<AutoIncrementDef>,
}

/// A column and the vindex that maps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnVindexDef {
    /// Column name.
    pub column: String,
    /// Vindex name (defined in the same keyspace).
    pub vindex: String,
}

/// A column backed by a sequence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoIncrementDef {
    /// Column name.
    pub column: String,
    /// Sequence table: `name` or `keyspace.name`.
    pub sequence: String,
}

fn deserialize_params<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Params, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Int(i64),
        Bool(bool),
    }
    let raw = BTreeMap::<String, Scalar>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                Scalar::Text(s) => s,
                Scalar::Int(i) => i.to_string(),
                Scalar::Bool(b) => b.to_string(),
            };
            (k, text)
        })
        .collect())
}

/// A keyspace after validation, with its vindexes built.
#[derive(Clone, Debug)]
pub struct KeyspaceInfo {
    name: String,
    sharded: bool,
    vindexes: BTreeMap<String, Arc<dyn Vindex>>,
}

impl KeyspaceInfo {
    /// The keyspace name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Is it sharded?
    #[must_use]
    pub fn is_sharded(&self) -> bool {
        self.sharded
    }

    /// A vindex by name.
    #[must_use]
    pub fn vindex(&self, name: &str) -> Option<&Arc<dyn Vindex>> {
        self.vindexes.get(name)
    }

    /// All vindexes, by name.
    pub fn vindexes(&self) -> impl Iterator<Item = (&str, &Arc<dyn Vindex>)> {
        self.vindexes.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// A column vindex after validation.
#[derive(Clone, Debug)]
pub struct ColumnVindex {
    /// Column name.
    pub column: String,
    /// The vindex.
    pub vindex: Arc<dyn Vindex>,
}

/// A resolved `auto_increment`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoIncrement {
    /// Column name.
    pub column: String,
    /// Keyspace of the sequence table.
    pub sequence_keyspace: String,
    /// Sequence table name.
    pub sequence_table: String,
}

/// A table after validation.
#[derive(Clone, Debug)]
pub struct TableInfo {
    keyspace: String,
    name: String,
    kind: TableKind,
    sharded_keyspace: bool,
    column_vindexes: Vec<ColumnVindex>,
    auto_increment: Option<AutoIncrement>,
}

impl TableInfo {
    /// Its keyspace.
    #[must_use]
    pub fn keyspace(&self) -> &str {
        &self.keyspace
    }

    /// Its name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its kind.
    #[must_use]
    pub fn kind(&self) -> TableKind {
        self.kind
    }

    /// Is it spread over shards by a primary vindex?
    #[must_use]
    pub fn is_sharded(&self) -> bool {
        self.sharded_keyspace && self.kind == TableKind::Normal
    }

    /// The primary vindex (sharded tables only).
    #[must_use]
    pub fn primary_vindex(&self) -> Option<&ColumnVindex> {
        self.column_vindexes.first()
    }

    /// All column vindexes, primary first.
    #[must_use]
    pub fn column_vindexes(&self) -> &[ColumnVindex] {
        &self.column_vindexes
    }

    /// The vindexes on one column, cheapest first (ties keep the declared order).
    #[must_use]
    pub fn vindexes_for_column(&self, column: &str) -> Vec<&ColumnVindex> {
        let mut found: Vec<&ColumnVindex> =
            self.column_vindexes.iter().filter(|cv| cv.column == column).collect();
        found.sort_by_key(|cv| cv.vindex.cost());
        found
    }

    /// The sequence-backed column, if any.
    #[must_use]
    pub fn auto_increment(&self) -> Option<&AutoIncrement> {
        self.auto_increment.as_ref()
    }
}

/// A validated VSchema: every vindex built, every reference resolved.
#[derive(Clone, Debug)]
pub struct ValidatedVSchema {
    doc: VSchema,
    keyspaces: BTreeMap<String, KeyspaceInfo>,
    tables: BTreeMap<String, TableInfo>,
}

impl ValidatedVSchema {
    /// The document it was validated from.
    #[must_use]
    pub fn doc(&self) -> &VSchema {
        &self.doc
    }

    /// A keyspace by name.
    #[must_use]
    pub fn keyspace(&self, name: &str) -> Option<&KeyspaceInfo> {
        self.keyspaces.get(name)
    }

    /// All keyspaces, by name.
    pub fn keyspaces(&self) -> impl Iterator<Item = &KeyspaceInfo> {
        self.keyspaces.values()
    }

    /// A table by (unqualified, globally unique) name.
    #[must_use]
    pub fn table(&self, name: &str) -> Option<&TableInfo> {
        self.tables.get(name)
    }

    /// All tables, by name.
    pub fn tables(&self) -> impl Iterator<Item = &TableInfo> {
        self.tables.values()
    }

    /// Check that `map` fits this VSchema: the same keyspaces on both sides, unsharded
    /// keyspaces on exactly one shard, and every shard a vindex names (consistent-hash rings)
    /// present.
    pub fn check_shard_map(&self, map: &ShardMap) -> Result<()> {
        if let Some(extra) = map.keyspaces().find(|k| !self.keyspaces.contains_key(k.keyspace())) {
            return Err(Error::ShardMapMismatch {
                keyspace: extra.keyspace().to_owned(),
                reason: "keyspace is not in the VSchema",
            });
        }
        for ks in self.keyspaces.values() {
            let shards = map.keyspace(&ks.name).map_err(|_| Error::ShardMapMismatch {
                keyspace: ks.name.clone(),
                reason: "keyspace is missing from the shard map",
            })?;
            if !ks.sharded && shards.shards().len() != 1 {
                return Err(Error::ShardMapMismatch {
                    keyspace: ks.name.clone(),
                    reason: "an unsharded keyspace must have exactly one shard",
                });
            }
            for (name, vindex) in &ks.vindexes {
                if let Some(missing) =
                    vindex.named_shards().iter().find(|s| shards.shard_named(s.as_str()).is_none())
                {
                    return Err(Error::InvalidVindex {
                        keyspace: ks.name.clone(),
                        vindex: name.clone(),
                        source: Box::new(Error::UnknownShard {
                            keyspace: ks.name.clone(),
                            shard: missing.clone(),
                        }),
                    });
                }
            }
        }
        Ok(())
    }
}

mod validate;

impl VSchema {
    /// Parse TOML (not yet validated).
    pub fn from_toml(text: &str) -> Result<Self> {
        Ok(toml::from_str(text)?)
    }

    /// Serialize to TOML.
    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string(self)?)
    }

    /// Parse JSON (not yet validated).
    pub fn from_json(text: &str) -> Result<Self> {
        Ok(serde_json::from_str(text)?)
    }

    /// Serialize to pretty JSON.
    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// Validate with the built-in vindex types.
    pub fn validate(&self) -> Result<ValidatedVSchema> {
        self.validate_with(&Registry::builtin())
    }

    /// Validate, building vindexes with `registry`. Returns the first problem found, in
    /// keyspace-name then table-name order.
    pub fn validate_with(&self, registry: &Registry) -> Result<ValidatedVSchema> {
        validate::validate(self, registry)
    }
}

#[cfg(test)]
mod tests;
