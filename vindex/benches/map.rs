//! Cost of mapping one key with each vindex type (criterion reports time per iteration =
//! time per key). Also the steps around it on the router's hot path: decoding a bind
//! parameter and resolving the destination to a shard.
//!
//! Run: `cargo bench -p vindex -- --warm-up-time 1 --measurement-time 3`

#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use vindex::{
    BackendError, ColumnType, ConsistentHash, Destination, HashVindex, KeyspaceId, KeyspaceShards, Lookup,
    LookupBackend, LookupRow, LookupTable, Numeric, RangeVindex, Shard, ShardName, SingleColumn, TypeOid,
    Value, DEFAULT_VNODES,
};

const KEYS: usize = 1024;

fn int_keys() -> Vec<Value> {
    // Spread-out values (a multiplicative sequence), so range lookups are not all one branch.
    (0..KEYS as i64).map(|i| Value::Int(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_u64 as i64))).collect()
}

fn text_keys() -> Vec<Value> {
    (0..KEYS).map(|i| Value::Text(format!("user-{i:08}@example.com"))).collect()
}

/// Time `map_one` over a rotating set of keys: one iteration = one key.
fn bench_map(c: &mut Criterion, name: &str, vindex: &dyn SingleColumn, keys: &[Value]) {
    assert_eq!(keys.len(), KEYS, "the index mask assumes KEYS keys");
    let mut i = 0usize;
    c.bench_function(name, |b| {
        b.iter(|| {
            i = (i + 1) & (KEYS - 1);
            black_box(vindex.map_one(black_box(&keys[i])).unwrap())
        })
    });
}

fn sixteen_shards() -> KeyspaceShards {
    let shards = vindex::KeyRange::FULL
        .split(16)
        .unwrap()
        .into_iter()
        .map(|r| Shard::new(ShardName::new(r.to_string()).unwrap(), r))
        .collect();
    KeyspaceShards::new("ks", shards).unwrap()
}

/// In-memory lookup table: measures the vindex's own work, not PostgreSQL's round trip.
struct MemoryTable(std::collections::HashMap<Value, Vec<KeyspaceId>>);

impl LookupBackend for MemoryTable {
    fn lookup(&mut self, _: &LookupTable, values: &[Value]) -> Result<Vec<Vec<KeyspaceId>>, BackendError> {
        Ok(values.iter().map(|v| self.0.get(v).cloned().unwrap_or_default()).collect())
    }
    fn create(&mut self, _: &LookupTable, rows: &[LookupRow]) -> Result<(), BackendError> {
        for r in rows {
            self.0.entry(r.value.clone()).or_default().push(r.keyspace_id);
        }
        Ok(())
    }
    fn delete(&mut self, _: &LookupTable, _: &[LookupRow]) -> Result<(), BackendError> {
        Ok(())
    }
}

fn vindexes(c: &mut Criterion) {
    let ints = int_keys();
    let texts = text_keys();

    bench_map(c, "hash/int8", &HashVindex::new("h", ColumnType::Int), &ints);
    bench_map(c, "hash/text", &HashVindex::new("h", ColumnType::Text), &texts);
    bench_map(c, "numeric/int8", &Numeric::new("n"), &ints);
    let range = RangeVindex::parse(
        "r",
        ColumnType::Int,
        "MINVALUE => 00, -4611686018427387904 => 40, 0 => 80, 4611686018427387904 => c0",
    )
    .unwrap();
    bench_map(c, "range/int8 (4 intervals)", &range, &ints);
    let shards = sixteen_shards();
    let names: Vec<ShardName> = shards.shards().iter().map(|s| s.name.clone()).collect();
    let ring = ConsistentHash::new("c", ColumnType::Int, names, DEFAULT_VNODES).unwrap();
    bench_map(c, "consistent_hash/int8 (16 shards x 160 vnodes)", &ring, &ints);

    let table = LookupTable::new("lk", "email", "keyspace_id", ColumnType::Text, true).unwrap();
    let lookup = Lookup::new("l", table);
    let mut db = MemoryTable(Default::default());
    let ids: Vec<KeyspaceId> = (0..KEYS as u64).map(|i| KeyspaceId::new(i << 40)).collect();
    lookup.create(&mut db, &texts, &ids).unwrap();
    let mut i = 0usize;
    c.bench_function("lookup_unique/text (in-memory backend)", |b| {
        b.iter(|| {
            i = (i + 1) & (KEYS - 1);
            black_box(lookup.map(&mut db, std::slice::from_ref(&texts[i])).unwrap())
        })
    });
}

fn hot_path(c: &mut Criterion) {
    let hash = HashVindex::new("h", ColumnType::Int);
    let shards = sixteen_shards();
    let params: Vec<[u8; 8]> = (0..KEYS as i64).map(|i| (i * 7919).to_be_bytes()).collect();
    let mut i = 0usize;
    c.bench_function("bind int8 binary -> hash -> shard (16 shards)", |b| {
        b.iter(|| {
            i = (i + 1) & (KEYS - 1);
            let v = Value::from_binary_param(Some(&params[i]), TypeOid::INT8, ColumnType::Int).unwrap();
            let Destination::KeyspaceId(id) = hash.map_one(&v).unwrap() else { unreachable!() };
            black_box(shards.shard_for(id).name.as_str().len())
        })
    });
    let texts: Vec<String> = (0..KEYS).map(|i| (i * 7919).to_string()).collect();
    c.bench_function("bind int8 text -> hash -> shard (16 shards)", |b| {
        b.iter(|| {
            i = (i + 1) & (KEYS - 1);
            let v =
                Value::from_text_param(Some(texts[i].as_bytes()), TypeOid::INT8, ColumnType::Int).unwrap();
            let Destination::KeyspaceId(id) = hash.map_one(&v).unwrap() else { unreachable!() };
            black_box(shards.shard_for(id).name.as_str().len())
        })
    });
}

criterion_group!(benches, vindexes, hot_path);
criterion_main!(benches);
