//! Proptest strategies shared by the unit tests and the conformance suite.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use crate::key_range::KeyRange;
use crate::keyspace_id::KeyspaceId;
use crate::shard_map::{KeyspaceShards, Shard, ShardName};

/// Any non-empty key range.
pub(crate) fn arb_key_range() -> impl Strategy<Value = KeyRange> {
    (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(a, b, open)| {
        let (lo, hi) = (a.min(b), a.max(b));
        let end = if open || lo == hi { None } else { Some(KeyspaceId::new(hi)) };
        KeyRange::new(KeyspaceId::new(lo), end).unwrap()
    })
}

/// A valid cover of the whole space, made the way shard maps evolve: start from `-` and split
/// random ranges into 2, 3 or 4 parts a few times.
pub(crate) fn arb_cover() -> impl Strategy<Value = Vec<KeyRange>> {
    proptest::collection::vec((any::<prop::sample::Index>(), 2u32..=4), 0..6).prop_map(|splits| {
        let mut ranges = vec![KeyRange::FULL];
        for (pick, parts) in splits {
            let i = pick.index(ranges.len());
            let r = ranges.remove(i);
            let pieces = r.split(parts).unwrap();
            ranges.splice(i..i, pieces);
        }
        ranges
    })
}

/// A valid keyspace (named `ks`) whose shards are named after their ranges.
pub(crate) fn arb_keyspace_shards() -> impl Strategy<Value = KeyspaceShards> {
    arb_cover().prop_map(shards_from_cover)
}

pub(crate) fn shards_from_cover(cover: Vec<KeyRange>) -> KeyspaceShards {
    let shards = cover.into_iter().map(|r| Shard::new(ShardName::new(r.to_string()).unwrap(), r)).collect();
    KeyspaceShards::new("ks", shards).unwrap()
}

/// An in-memory lookup table with the semantics [`crate::LookupBackend`] documents (a test
/// double of the crate's own trait, standing in for the router's PostgreSQL connection).
#[derive(Debug, Default)]
pub(crate) struct MemoryBackend {
    pub(crate) rows: Vec<crate::lookup::LookupRow>,
    pub(crate) calls: usize,
}

impl crate::lookup::LookupBackend for MemoryBackend {
    fn lookup(
        &mut self,
        _table: &crate::lookup::LookupTable,
        values: &[crate::value::Value],
    ) -> Result<Vec<Vec<KeyspaceId>>, crate::error::BackendError> {
        self.calls += 1;
        Ok(values
            .iter()
            .map(|v| self.rows.iter().filter(|r| &r.value == v).map(|r| r.keyspace_id).collect())
            .collect())
    }

    fn create(
        &mut self,
        table: &crate::lookup::LookupTable,
        rows: &[crate::lookup::LookupRow],
    ) -> Result<(), crate::error::BackendError> {
        self.calls += 1;
        for row in rows {
            // ON CONFLICT (value) / (value, keyspace_id) DO NOTHING.
            let conflict = self
                .rows
                .iter()
                .any(|r| r.value == row.value && (table.is_unique() || r.keyspace_id == row.keyspace_id));
            if !conflict {
                self.rows.push(row.clone());
            }
        }
        Ok(())
    }

    fn delete(
        &mut self,
        _table: &crate::lookup::LookupTable,
        rows: &[crate::lookup::LookupRow],
    ) -> Result<(), crate::error::BackendError> {
        self.calls += 1;
        self.rows.retain(|r| !rows.contains(r));
        Ok(())
    }
}

/// The first ```` ```toml ```` block of a file's `//!` module docs, so documented examples are
/// parsed by tests and cannot rot.
pub(crate) fn doc_toml_block(source: &str) -> String {
    let doc: Vec<&str> = source
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    let start = doc.iter().position(|l| *l == "```toml").unwrap() + 1;
    let len = doc[start..].iter().position(|l| *l == "```").unwrap();
    doc[start..start + len].join("\n")
}
