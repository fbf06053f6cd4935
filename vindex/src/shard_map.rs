//! `ShardMap`: the versioned document saying which shard owns which key range, per keyspace.
//!
//! Endpoints (hosts, ports, credentials) are not here: they belong to the router and the control
//! plane. A `ShardMap` value is always valid: every keyspace's ranges cover the whole
//! keyspace-id space with no gap or overlap and its shard names are unique. Construction
//! ([`ShardMap::new`], [`ShardMap::from_toml`], serde) is where validation happens; there is
//! no way to hold an invalid map.
//!
//! TOML form (an unsharded keyspace is one shard owning `-`):
//!
//! ```toml
//! version = 7
//!
//! [[keyspaces.commerce.shards]]
//! name = "-80"
//! range = "-80"
//!
//! [[keyspaces.commerce.shards]]
//! name = "80-"
//! range = "80-"
//!
//! [[keyspaces.main.shards]]
//! name = "0"
//! range = "-"
//! ```

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::destination::Destination;
use crate::error::{Error, Result};
use crate::key_range::KeyRange;
use crate::keyspace_id::KeyspaceId;

/// A shard's name, unique within its keyspace (Vitess names shards after their range: `-80`).
/// Cheap to clone (shared string), so destinations can carry it on hot paths.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardName(Arc<str>);

impl ShardName {
    /// A name: non-empty, no whitespace or control characters.
    pub fn new(name: impl AsRef<str>) -> Result<Self> {
        let name = name.as_ref();
        let reason = if name.is_empty() {
            Some("empty")
        } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Some("whitespace and control characters are not allowed")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidShardName { name: name.to_owned(), reason }),
            None => Ok(ShardName(Arc::from(name))),
        }
    }

    /// The name as a string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ShardName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Borrow<str> for ShardName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Serialize for ShardName {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ShardName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ShardName::new(s).map_err(serde::de::Error::custom)
    }
}

/// One shard: a name and the key range it owns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shard {
    /// Unique within the keyspace.
    pub name: ShardName,
    /// The keyspace ids whose rows live here.
    pub range: KeyRange,
}

impl Shard {
    /// A shard.
    #[must_use]
    pub fn new(name: ShardName, range: KeyRange) -> Self {
        Shard { name, range }
    }
}

/// The shards of one keyspace, sorted by range, covering the whole space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyspaceShards {
    keyspace: String,
    shards: Vec<Shard>,
}

impl KeyspaceShards {
    /// Validate and sort: ranges must cover the space exactly once, names must be unique.
    pub fn new(keyspace: impl Into<String>, mut shards: Vec<Shard>) -> Result<Self> {
        let keyspace = keyspace.into();
        let ranges: Vec<KeyRange> = shards.iter().map(|s| s.range).collect();
        KeyRange::check_cover(&ranges)
            .map_err(|e| Error::InKeyspace { keyspace: keyspace.clone(), source: Box::new(e) })?;
        shards.sort_by_key(|s| s.range);
        let mut names: Vec<&ShardName> = shards.iter().map(|s| &s.name).collect();
        names.sort();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::DuplicateShardName { keyspace, shard: w[0].clone() });
        }
        Ok(KeyspaceShards { keyspace, shards })
    }

    /// The keyspace name.
    #[must_use]
    pub fn keyspace(&self) -> &str {
        &self.keyspace
    }

    /// The shards in key-range order.
    #[must_use]
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Index (in [`Self::shards`]) of the shard owning `id`.
    #[must_use]
    pub fn index_of(&self, id: KeyspaceId) -> usize {
        // The first shard starts at 0 (coverage), so the partition point is at least 1.
        self.shards.partition_point(|s| s.range.start() <= id).saturating_sub(1)
    }

    /// The shard owning `id` (there is always exactly one). No allocation: the fast path for a
    /// single-key statement.
    #[must_use]
    pub fn shard_for(&self, id: KeyspaceId) -> &Shard {
        &self.shards[self.index_of(id)]
    }

    /// The shard with this name.
    #[must_use]
    pub fn shard_named(&self, name: &str) -> Option<&Shard> {
        self.shards.iter().find(|s| s.name.as_str() == name)
    }

    /// See [`Destination::resolve`].
    pub fn resolve(&self, dest: &Destination) -> Result<Vec<&Shard>> {
        dest.resolve(self)
    }
}

/// The unvalidated document form of a [`ShardMap`] (what TOML/JSON hold).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardMapDoc {
    /// Incremented on every change; routers never mix versions within one statement.
    pub version: u64,
    /// Keyspace name → its shards.
    #[serde(default)]
    pub keyspaces: BTreeMap<String, KeyspaceDoc>,
}

/// The shards of one keyspace in a [`ShardMapDoc`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyspaceDoc {
    /// In any order; stored sorted by range.
    pub shards: Vec<Shard>,
}

/// A validated, versioned shard map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ShardMapDoc", into = "ShardMapDoc")]
pub struct ShardMap {
    version: u64,
    keyspaces: BTreeMap<String, KeyspaceShards>,
}

impl TryFrom<ShardMapDoc> for ShardMap {
    type Error = Error;

    fn try_from(doc: ShardMapDoc) -> Result<Self> {
        ShardMap::new(doc.version, doc.keyspaces.into_iter().map(|(k, v)| (k, v.shards)))
    }
}

impl From<ShardMap> for ShardMapDoc {
    fn from(map: ShardMap) -> Self {
        ShardMapDoc {
            version: map.version,
            keyspaces: map
                .keyspaces
                .into_iter()
                .map(|(k, v)| (k, KeyspaceDoc { shards: v.shards }))
                .collect(),
        }
    }
}

/// One difference between two shard maps, keyed by key range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardMapChange {
    /// A range that did not exist before (e.g. a half produced by a split).
    Added { keyspace: String, range: KeyRange, shard: ShardName },
    /// A range that no longer exists (e.g. the range of a shard that was split).
    Removed { keyspace: String, range: KeyRange, shard: ShardName },
    /// The same range now owned by a differently named shard.
    Changed { keyspace: String, range: KeyRange, old_shard: ShardName, new_shard: ShardName },
}

impl fmt::Display for ShardMapChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShardMapChange::Added { keyspace, range, shard } => {
                write!(f, "added {keyspace}/{range} on shard {shard}")
            }
            ShardMapChange::Removed { keyspace, range, shard } => {
                write!(f, "removed {keyspace}/{range} from shard {shard}")
            }
            ShardMapChange::Changed { keyspace, range, old_shard, new_shard } => {
                write!(f, "moved {keyspace}/{range} from shard {old_shard} to {new_shard}")
            }
        }
    }
}

impl ShardMap {
    /// Build and validate a shard map.
    pub fn new(version: u64, keyspaces: impl IntoIterator<Item = (String, Vec<Shard>)>) -> Result<Self> {
        let keyspaces = keyspaces
            .into_iter()
            .map(|(name, shards)| KeyspaceShards::new(name.clone(), shards).map(|ks| (name, ks)))
            .collect::<Result<_>>()?;
        Ok(ShardMap { version, keyspaces })
    }

    /// The document version.
    #[must_use]
    pub fn version(&self) -> u64 {
        self.version
    }

    /// One keyspace's shards.
    pub fn keyspace(&self, keyspace: &str) -> Result<&KeyspaceShards> {
        self.keyspaces.get(keyspace).ok_or_else(|| Error::UnknownKeyspace { keyspace: keyspace.to_owned() })
    }

    /// All keyspaces, by name.
    pub fn keyspaces(&self) -> impl Iterator<Item = &KeyspaceShards> {
        self.keyspaces.values()
    }

    /// Resolve a destination in a keyspace (see [`Destination::resolve`]).
    pub fn resolve(&self, keyspace: &str, dest: &Destination) -> Result<Vec<&Shard>> {
        dest.resolve(self.keyspace(keyspace)?)
    }

    /// Parse and validate TOML.
    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str::<ShardMapDoc>(text)?.try_into()
    }

    /// Serialize to TOML.
    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string(&ShardMapDoc::from(self.clone()))?)
    }

    /// Parse and validate JSON.
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str::<ShardMapDoc>(text)?.try_into()
    }

    /// Serialize to pretty JSON.
    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(&ShardMapDoc::from(self.clone()))?)
    }

    /// What changed from `old` to `new`, by key range: ranges only in `old` are removed, ranges
    /// only in `new` are added, ranges in both with a different shard name are changed. Sorted
    /// by keyspace, then range.
    #[must_use]
    pub fn diff(old: &ShardMap, new: &ShardMap) -> Vec<ShardMapChange> {
        let mut names: Vec<&String> = old.keyspaces.keys().chain(new.keyspaces.keys()).collect();
        names.sort();
        names.dedup();
        let mut changes = Vec::new();
        for ks in names {
            let ranges = |m: &ShardMap| -> BTreeMap<KeyRange, ShardName> {
                m.keyspaces
                    .get(ks)
                    .map(|k| k.shards.iter().map(|s| (s.range, s.name.clone())).collect())
                    .unwrap_or_default()
            };
            let (before, after) = (ranges(old), ranges(new));
            let mut all: Vec<&KeyRange> = before.keys().chain(after.keys()).collect();
            all.sort();
            all.dedup();
            for range in all {
                let keyspace = ks.clone();
                let range = *range;
                match (before.get(&range), after.get(&range)) {
                    (Some(shard), None) => {
                        changes.push(ShardMapChange::Removed { keyspace, range, shard: shard.clone() })
                    }
                    (None, Some(shard)) => {
                        changes.push(ShardMapChange::Added { keyspace, range, shard: shard.clone() })
                    }
                    (Some(a), Some(b)) if a != b => changes.push(ShardMapChange::Changed {
                        keyspace,
                        range,
                        old_shard: a.clone(),
                        new_shard: b.clone(),
                    }),
                    _ => {}
                }
            }
        }
        changes
    }

    /// The next version of the map, where `shard` of `keyspace` is replaced by
    /// `new_names.len()` shards splitting its range into equal parts (two names halve it), in
    /// key order.
    pub fn split(&self, keyspace: &str, shard: &str, new_names: &[ShardName]) -> Result<ShardMap> {
        let ks = self.keyspace(keyspace)?;
        let old = ks.shard_named(shard).ok_or_else(|| unknown_shard(keyspace, shard))?;
        if new_names.len() < 2 {
            return Err(Error::SplitTooFewShards {
                keyspace: keyspace.to_owned(),
                shard: old.name.clone(),
                got: new_names.len(),
            });
        }
        let parts = u32::try_from(new_names.len())
            .map_err(|_| Error::KeyRangeTooSmall { range: old.range, parts: u32::MAX })?;
        let pieces = old
            .range
            .split(parts)
            .map_err(|e| Error::InKeyspace { keyspace: keyspace.to_owned(), source: Box::new(e) })?;
        let mut shards: Vec<Shard> = ks.shards.iter().filter(|s| s.name != old.name).cloned().collect();
        shards.extend(new_names.iter().zip(pieces).map(|(name, range)| Shard::new(name.clone(), range)));
        let version = self.version.checked_add(1).ok_or(Error::VersionOverflow { version: self.version })?;
        let mut keyspaces = self.keyspaces.clone();
        keyspaces.insert(keyspace.to_owned(), KeyspaceShards::new(keyspace, shards)?);
        Ok(ShardMap { version, keyspaces })
    }

    /// [`Self::split`] into `parts` shards named after their ranges (the Vitess convention:
    /// splitting `-80` in two gives `-40` and `40-80`).
    pub fn split_by_range(&self, keyspace: &str, shard: &str, parts: u32) -> Result<ShardMap> {
        let ks = self.keyspace(keyspace)?;
        let range = ks.shard_named(shard).map(|s| s.range).ok_or_else(|| unknown_shard(keyspace, shard))?;
        let names = range
            .split(parts)
            .map_err(|e| Error::InKeyspace { keyspace: keyspace.to_owned(), source: Box::new(e) })?
            .iter()
            .map(|r| ShardName::new(r.to_string()))
            .collect::<Result<Vec<_>>>()?;
        self.split(keyspace, shard, &names)
    }
}

/// `UnknownShard`, or `InvalidShardName` if `shard` could not even be a shard's name.
fn unknown_shard(keyspace: &str, shard: &str) -> Error {
    match ShardName::new(shard) {
        Ok(shard) => Error::UnknownShard { keyspace: keyspace.to_owned(), shard },
        Err(invalid) => invalid,
    }
}

#[cfg(test)]
mod tests;
