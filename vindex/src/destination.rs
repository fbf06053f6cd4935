//! `Destination`: where a vindex says rows are, before knowing which shards exist.
//!
//! A vindex never returns a shard number (Vitess `go/vt/key/destination.go`): it returns keyspace
//! ids or key ranges, and the router resolves them against the shard map it holds at that
//! moment. That is what lets a split move ranges without rehashing anything.

use std::fmt;

use crate::error::{Error, Result};
use crate::key_range::KeyRange;
use crate::keyspace_id::KeyspaceId;
use crate::shard_map::{KeyspaceShards, Shard, ShardName};

/// Where rows matching a key live.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Destination {
    /// Nowhere: no row can match (e.g. `WHERE k = NULL`, or a lookup that found nothing).
    None,
    /// The shard owning one keyspace id.
    KeyspaceId(KeyspaceId),
    /// The shards owning any of these keyspace ids (non-unique vindexes, `IN` lists).
    KeyspaceIds(Vec<KeyspaceId>),
    /// Every shard whose range intersects this range.
    KeyRange(KeyRange),
    /// One shard by name (consistent-hash vindexes, explicit targeting).
    Shard(ShardName),
    /// Every shard of the keyspace (scatter).
    AllShards,
}

impl Destination {
    /// Is this [`Destination::None`]?
    #[must_use]
    pub fn is_none(&self) -> bool {
        matches!(self, Destination::None)
    }

    /// Resolve against one keyspace's shards: the minimal set of shards that can hold matching
    /// rows, deduplicated, in key-range order. Fails only for a named shard the keyspace does
    /// not have.
    pub fn resolve<'a>(&self, shards: &'a KeyspaceShards) -> Result<Vec<&'a Shard>> {
        let all = shards.shards();
        Ok(match self {
            Destination::None => Vec::new(),
            Destination::KeyspaceId(id) => vec![&all[shards.index_of(*id)]],
            Destination::KeyspaceIds(ids) => {
                let mut idx: Vec<usize> = ids.iter().map(|id| shards.index_of(*id)).collect();
                idx.sort_unstable();
                idx.dedup();
                idx.into_iter().map(|i| &all[i]).collect()
            }
            Destination::KeyRange(range) => {
                // Shards are sorted and contiguous: start at the one holding range.start and
                // stop at the first one starting at or after range.end.
                let first = shards.index_of(range.start());
                all[first..]
                    .iter()
                    .take_while(|s| range.end().is_none_or(|end| s.range.start() < end))
                    .collect()
            }
            Destination::Shard(name) => {
                vec![shards.shard_named(name.as_str()).ok_or_else(|| Error::UnknownShard {
                    keyspace: shards.keyspace().to_owned(),
                    shard: name.clone(),
                })?]
            }
            Destination::AllShards => all.iter().collect(),
        })
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::None => f.write_str("none"),
            Destination::KeyspaceId(id) => write!(f, "keyspace_id:{id}"),
            Destination::KeyspaceIds(ids) => {
                f.write_str("keyspace_ids:")?;
                for (i, id) in ids.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{id}")?;
                }
                Ok(())
            }
            Destination::KeyRange(r) => write!(f, "key_range:{r}"),
            Destination::Shard(s) => write!(f, "shard:{s}"),
            Destination::AllShards => f.write_str("all_shards"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testing::arb_keyspace_shards;
    use proptest::prelude::*;

    fn quarters() -> KeyspaceShards {
        KeyspaceShards::new(
            "ks",
            ["-40", "40-80", "80-c0", "c0-"]
                .iter()
                .map(|r| Shard::new(ShardName::new(*r).unwrap(), r.parse().unwrap()))
                .collect(),
        )
        .unwrap()
    }

    fn names(shards: &[&Shard]) -> Vec<String> {
        shards.iter().map(|s| s.name.to_string()).collect()
    }

    fn id(hex: &str) -> KeyspaceId {
        hex.parse().unwrap()
    }

    #[test]
    fn resolves_each_kind() {
        let q = quarters();
        let r = |d: Destination| names(&d.resolve(&q).unwrap());
        assert!(r(Destination::None).is_empty());
        assert_eq!(r(Destination::KeyspaceId(id("41"))), ["40-80"]);
        assert_eq!(r(Destination::KeyspaceId(KeyspaceId::MAX)), ["c0-"]);
        assert_eq!(r(Destination::KeyspaceIds(vec![id("c1"), id("01"), id("02"), id("c0")])), ["-40", "c0-"]);
        assert_eq!(r(Destination::KeyRange("50-90".parse().unwrap())), ["40-80", "80-c0"]);
        assert_eq!(r(Destination::KeyRange("40-80".parse().unwrap())), ["40-80"]);
        assert_eq!(r(Destination::KeyRange("-".parse().unwrap())).len(), 4);
        assert_eq!(r(Destination::Shard(ShardName::new("80-c0").unwrap())), ["80-c0"]);
        assert_eq!(r(Destination::AllShards), ["-40", "40-80", "80-c0", "c0-"]);
        let err = Destination::Shard(ShardName::new("nope").unwrap()).resolve(&q).unwrap_err();
        assert_eq!(err.to_string(), "keyspace ks has no shard nope");
    }

    #[test]
    fn display() {
        assert_eq!(
            Destination::KeyspaceIds(vec![id("01"), id("02")]).to_string(),
            "keyspace_ids:0100000000000000,0200000000000000"
        );
        assert_eq!(Destination::KeyRange(KeyRange::FULL).to_string(), "key_range:-");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn key_range_resolution_is_exactly_the_intersecting_shards(
            shards in arb_keyspace_shards(),
            a in any::<u64>(),
            b in any::<u64>(),
            open in any::<bool>(),
        ) {
            let (lo, hi) = (a.min(b), a.max(b));
            let end = if open || lo == hi { None } else { Some(KeyspaceId::new(hi)) };
            let range = KeyRange::new(KeyspaceId::new(lo), end).unwrap();
            let got = Destination::KeyRange(range).resolve(&shards).unwrap();
            let want: Vec<&Shard> = shards.shards().iter().filter(|s| s.range.intersects(&range)).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn keyspace_ids_resolve_to_owners_in_order(
            shards in arb_keyspace_shards(),
            ids in proptest::collection::vec(any::<u64>(), 0..10),
        ) {
            let ids: Vec<KeyspaceId> = ids.into_iter().map(KeyspaceId::new).collect();
            let got = Destination::KeyspaceIds(ids.clone()).resolve(&shards).unwrap();
            let want: Vec<&Shard> = shards
                .shards()
                .iter()
                .filter(|s| ids.iter().any(|id| s.range.contains(*id)))
                .collect();
            prop_assert_eq!(got, want);
        }
    }
}
