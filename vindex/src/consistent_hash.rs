//! The `consistent_hash` vindex: a hash ring of named shards with virtual nodes.
//!
//! Built on the `hashring` crate (0.3), which has no virtual nodes of its own and hashes through
//! `std::hash::Hash` with a hasher we supply. Everything hashed is explicit bytes fed to
//! zero-key SipHash-2-4 ([`crate::siphash::StableBuildHasher`]), so placement never changes
//! across Rust or crate versions:
//!
//! ```text
//! ring point of vnode i of shard s = SipHash-2-4(0, 0, utf8(s) || 0x00 || be32(i))   i in 0..vnodes
//! position of value v             = SipHash-2-4(0, 0, canonical_bytes(v))            (= hash vindex)
//! shard of v = shard of the first ring point >= position(v), wrapping to the lowest point
//! ```
//!
//! (Shard names cannot contain NUL, so the `0x00` separator makes the encoding unambiguous.)
//! Ties between equal ring points, which need a 64-bit collision, go to the shard whose name
//! sorts first.
//!
//! Adding a shard to N moves about 1/(N+1) of the keys, all of them to the new shard; removing
//! one moves only its keys. Unlike the other vindexes the destination is a named shard
//! ([`Destination::Shard`]), not a keyspace id: a consistent-hash keyspace grows by adding a
//! shard name to `shards` (and moving the keys the ring reassigns), not by splitting key ranges,
//! and its shards must exist by those names in the shard map. The keyspace id of a row
//! ([`Hashing::hash`], what `verify` checks) is its ring position.
//!
//! Parameters: `column_type` (required), `shards` (required; comma-separated shard names),
//! `vnodes` (optional, default 160, 1..=4096: more vnodes spread load more evenly at the cost
//! of a larger ring). Cost 1; unique. NULL: `map` → [`Destination::None`], `verify` → false,
//! `map_for_insert` → [`crate::Error::NullShardingKey`].

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use hashring::HashRing;

use crate::destination::Destination;
use crate::error::{Error, Result};
use crate::hash::hash_value;
use crate::keyspace_id::KeyspaceId;
use crate::registry::VindexSpec;
use crate::shard_map::ShardName;
use crate::siphash::StableBuildHasher;
use crate::value::{ColumnType, Value};
use crate::vindex::{check_value, Hashing, SingleColumn, Vindex};

/// Type name in the VSchema.
pub const TYPE_NAME: &str = "consistent_hash";
pub(crate) const PARAMS: &[&str] = &["column_type", "shards", "vnodes"];

/// Virtual nodes per shard when `vnodes` is not given (the ketama default).
pub const DEFAULT_VNODES: u32 = 160;
/// Upper bound for `vnodes`.
pub const MAX_VNODES: u32 = 4096;

/// One virtual node on the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
struct VNode {
    shard: ShardName,
    index: u32,
}

impl Hash for VNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.shard.as_str().as_bytes());
        state.write(&[0]);
        state.write(&self.index.to_be_bytes());
    }
}

/// A lookup key: exactly these bytes are hashed.
struct RingKey<'a>(&'a [u8]);

impl Hash for RingKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0);
    }
}

/// The `consistent_hash` vindex.
#[derive(Clone, Debug)]
pub struct ConsistentHash {
    name: String,
    column_type: ColumnType,
    vnodes: u32,
    shards: Vec<ShardName>,
    ring: HashRing<VNode, StableBuildHasher>,
}

impl ConsistentHash {
    /// A ring over `shards` (non-empty, distinct; order does not matter) with `vnodes` virtual
    /// nodes per shard.
    pub fn new(
        name: impl Into<String>,
        column_type: ColumnType,
        mut shards: Vec<ShardName>,
        vnodes: u32,
    ) -> Result<Self> {
        let name = name.into();
        let invalid = |param, reason: String| Error::InvalidParam {
            vindex: name.clone(),
            vindex_type: TYPE_NAME.to_owned(),
            param,
            reason,
        };
        if !(1..=MAX_VNODES).contains(&vnodes) {
            return Err(invalid("vnodes", format!("must be 1..={MAX_VNODES}, got {vnodes}")));
        }
        if shards.is_empty() {
            return Err(invalid("shards", "at least one shard is needed".to_owned()));
        }
        shards.sort();
        if let Some(w) = shards.windows(2).find(|w| w[0] == w[1]) {
            return Err(invalid("shards", format!("shard {} listed twice", w[0])));
        }
        let mut ring = HashRing::with_hasher(StableBuildHasher);
        // Sorted insertion + hashring's stable sort: ties resolve the same way every time.
        ring.batch_add(
            shards
                .iter()
                .flat_map(|s| (0..vnodes).map(move |index| VNode { shard: s.clone(), index }))
                .collect(),
        );
        Ok(ConsistentHash { name, column_type, vnodes, shards, ring })
    }

    /// The ring's shards, sorted by name.
    #[must_use]
    pub fn shards(&self) -> &[ShardName] {
        &self.shards
    }

    /// Virtual nodes per shard.
    #[must_use]
    pub fn vnodes(&self) -> u32 {
        self.vnodes
    }

    fn shard_of(&self, value: &Value) -> Option<&ShardName> {
        let bytes = value.canonical_bytes()?;
        self.ring.get(&RingKey(bytes.as_ref())).map(|n| &n.shard)
    }
}

pub(crate) fn build(spec: &VindexSpec<'_>) -> Result<Arc<dyn Vindex>> {
    let shards = spec
        .required("shards")?
        .split(',')
        .map(|s| ShardName::new(s.trim()).map_err(|e| spec.invalid("shards", e.to_string())))
        .collect::<Result<Vec<_>>>()?;
    let vnodes = match spec.get("vnodes") {
        None => DEFAULT_VNODES,
        Some(v) => {
            v.trim().parse().map_err(|_| spec.invalid("vnodes", format!("expected an integer, got {v:?}")))?
        }
    };
    Ok(Arc::new(ConsistentHash::new(spec.name(), spec.column_type()?, shards, vnodes)?))
}

impl Vindex for ConsistentHash {
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
    fn named_shards(&self) -> &[ShardName] {
        &self.shards
    }
}

impl SingleColumn for ConsistentHash {
    fn map_one(&self, value: &Value) -> Result<Destination> {
        check_value(self, value)?;
        Ok(self.shard_of(value).map_or(Destination::None, |s| Destination::Shard(s.clone())))
    }

    fn verify_one(&self, value: &Value, id: KeyspaceId) -> Result<bool> {
        check_value(self, value)?;
        Ok(hash_value(value) == Some(id))
    }
}

impl Hashing for ConsistentHash {
    fn hash(&self, value: &Value) -> Result<Option<KeyspaceId>> {
        check_value(self, value)?;
        Ok(hash_value(value))
    }
}

#[cfg(test)]
mod tests;
