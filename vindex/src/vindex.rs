//! The vindex traits, shaped like Vitess's `go/vt/vtgate/vindexes/vindex.go`.
//!
//! * [`Vindex`]: what every vindex is (name, type, column type, cost, uniqueness, whether it
//!   needs a lookup table). The planner compares costs to pick the cheapest usable vindex.
//! * [`SingleColumn`]: a *functional* vindex that maps one column's values to destinations by
//!   computation alone (`hash`, `numeric`, `range`, `consistent_hash`).
//! * [`Reversible`]: keyspace id → value (`numeric`).
//! * [`Hashing`]: value → the one keyspace id it hashes to, also for vindexes whose
//!   destination is a named shard (`hash`, `consistent_hash`).
//! * Lookup vindexes ([`crate::Lookup`]) need IO, which this crate does not do: their map/verify
//!   take a [`crate::LookupBackend`] implemented by the router, or are driven step by step
//!   (see `lookup.rs`). Reach them through [`Vindex::as_lookup`].
//!
//! Costs (Vitess's scale): `numeric` 0, `hash` / `range` / `consistent_hash` 1, `lookup_unique`
//! 10, `lookup` 20.
//!
//! NULL: for reads, `map` of NULL is [`Destination::None`] (`WHERE k = NULL` matches nothing) and
//! `verify` of NULL is `false`; for INSERT use [`SingleColumn::map_for_insert`], which turns a
//! NULL key into [`Error::NullShardingKey`].

use std::fmt::Debug;

use crate::destination::Destination;
use crate::error::{Error, Result};
use crate::keyspace_id::KeyspaceId;
use crate::lookup::Lookup;
use crate::shard_map::ShardName;
use crate::value::{ColumnType, Value};

/// What every vindex is.
pub trait Vindex: Debug + Send + Sync {
    /// The instance name given in the VSchema (`hash_user_id`).
    fn name(&self) -> &str;

    /// The type name it was built from (`hash`, `range`, ...).
    fn type_name(&self) -> &'static str;

    /// The declared type of the column it maps; values are canonicalized to it (see `value.rs`).
    fn column_type(&self) -> ColumnType;

    /// Relative cost of mapping one value; the planner picks the cheapest usable vindex.
    fn cost(&self) -> u32;

    /// Does each value map to at most one keyspace id (or shard)? A table's primary vindex must
    /// be unique.
    fn is_unique(&self) -> bool;

    /// Does mapping need a lookup table (IO through a [`crate::LookupBackend`])?
    fn needs_lookup(&self) -> bool {
        false
    }

    /// The functional view, if the vindex maps by computation alone.
    fn as_single_column(&self) -> Option<&dyn SingleColumn> {
        None
    }

    /// The reverse mapping, if the vindex has one.
    fn as_reversible(&self) -> Option<&dyn Reversible> {
        None
    }

    /// The hash view, if the vindex places values by a keyspace id hash.
    fn as_hashing(&self) -> Option<&dyn Hashing> {
        None
    }

    /// The lookup view, if the vindex is backed by a lookup table.
    fn as_lookup(&self) -> Option<&Lookup> {
        None
    }

    /// Shards the vindex names directly (a consistent-hash ring's members), which must exist in
    /// the keyspace's shard map; empty for vindexes that map to keyspace ids.
    fn named_shards(&self) -> &[ShardName] {
        &[]
    }
}

/// A vindex that maps one column's values by computation alone (no IO).
pub trait SingleColumn: Vindex {
    /// The destination of one value. The hot path: implementations do not allocate for
    /// fixed-size values (ints, uuids, timestamps).
    fn map_one(&self, value: &Value) -> Result<Destination>;

    /// Does `value` map to keyspace id `id`? (`false` for NULL.)
    fn verify_one(&self, value: &Value, id: KeyspaceId) -> Result<bool>;

    /// The destination of each value, in order.
    fn map(&self, values: &[Value]) -> Result<Vec<Destination>> {
        values.iter().map(|v| self.map_one(v)).collect()
    }

    /// For each `(values[i], ids[i])`: does the value map to that keyspace id?
    fn verify(&self, values: &[Value], ids: &[KeyspaceId]) -> Result<Vec<bool>> {
        if values.len() != ids.len() {
            return Err(Error::LengthMismatch {
                vindex: self.name().to_owned(),
                values: values.len(),
                keyspace_ids: ids.len(),
            });
        }
        values.iter().zip(ids).map(|(v, id)| self.verify_one(v, *id)).collect()
    }

    /// The destination of a new row's sharding key on INSERT: exactly one keyspace id or shard.
    /// NULL is [`Error::NullShardingKey`]; a value mapping nowhere is
    /// [`Error::NoShardForValue`]. Attach table and column names with [`Error::at_column`].
    fn map_for_insert(&self, value: &Value) -> Result<Destination> {
        if value.is_null() {
            return Err(Error::NullShardingKey { vindex: self.name().to_owned(), table: None, column: None });
        }
        match self.map_one(value)? {
            d @ (Destination::KeyspaceId(_) | Destination::Shard(_)) => Ok(d),
            Destination::KeyspaceIds(ids) if ids.len() == 1 => Ok(Destination::KeyspaceId(ids[0])),
            _ => Err(Error::NoShardForValue { vindex: self.name().to_owned(), table: None, column: None }),
        }
    }
}

/// A vindex whose keyspace ids can be turned back into the values that produced them.
pub trait Reversible: SingleColumn {
    /// The value for each keyspace id, in order.
    fn reverse_map(&self, ids: &[KeyspaceId]) -> Result<Vec<Value>>;
}

/// A vindex that hashes each value to one keyspace id.
pub trait Hashing: SingleColumn {
    /// The keyspace id of a value; `None` for NULL.
    fn hash(&self, value: &Value) -> Result<Option<KeyspaceId>>;
}

/// Fail unless `value` fits the vindex's column type (NULL fits every type).
pub(crate) fn check_value<V: Vindex + ?Sized>(vindex: &V, value: &Value) -> Result<()> {
    if value.fits(vindex.column_type()) {
        Ok(())
    } else {
        Err(Error::WrongValueType {
            vindex: vindex.name().to_owned(),
            column_type: vindex.column_type(),
            value_type: value.type_name(),
        })
    }
}
