//! The conformance suite every vindex passes (in the manner of openraft's storage suite).
//!
//! [`check`] takes any vindex behind the [`Subject`] adapter, a batch of values and a shard
//! map, and asserts:
//!
//! 1. determinism: mapping a batch twice gives the same result, and mapping a batch equals
//!    mapping each value alone;
//! 2. NULL maps to [`Destination::None`] and verifies against nothing;
//! 3. `verify` agrees with `map`: every keyspace id `map` produced (or the ring position, for a
//!    destination that is a named shard) verifies, and a different keyspace id does not;
//! 4. every key lands in exactly one shard: a unique vindex's destination resolves to exactly
//!    one shard (or none for [`Destination::None`]), namely the owner of its keyspace id; a
//!    non-unique vindex's keyspace ids each resolve to their one owner.
//!
//! The proptests below run it for every vindex type, over random values and random valid shard
//! maps made by splitting (consistent-hash rings are built over the random map's shards).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use proptest::prelude::*;

use crate::consistent_hash::{ConsistentHash, DEFAULT_VNODES};
use crate::destination::Destination;
use crate::error::Result;
use crate::hash::HashVindex;
use crate::keyspace_id::KeyspaceId;
use crate::lookup::{Lookup, LookupTable};
use crate::numeric::Numeric;
use crate::range::RangeVindex;
use crate::shard_map::{KeyspaceShards, Shard};
use crate::testing::{arb_keyspace_shards, MemoryBackend};
use crate::value::{ColumnType, Value};
use crate::vindex::Vindex;

/// A vindex under test, functional or lookup-backed.
trait Subject {
    fn vindex(&self) -> &dyn Vindex;
    fn map(&mut self, values: &[Value]) -> Result<Vec<Destination>>;
    fn verify(&mut self, values: &[Value], ids: &[KeyspaceId]) -> Result<Vec<bool>>;
}

struct Functional(Arc<dyn Vindex>);

impl Subject for Functional {
    fn vindex(&self) -> &dyn Vindex {
        &*self.0
    }
    fn map(&mut self, values: &[Value]) -> Result<Vec<Destination>> {
        self.0.as_single_column().unwrap().map(values)
    }
    fn verify(&mut self, values: &[Value], ids: &[KeyspaceId]) -> Result<Vec<bool>> {
        self.0.as_single_column().unwrap().verify(values, ids)
    }
}

struct WithBackend {
    vindex: Lookup,
    backend: MemoryBackend,
}

impl Subject for WithBackend {
    fn vindex(&self) -> &dyn Vindex {
        &self.vindex
    }
    fn map(&mut self, values: &[Value]) -> Result<Vec<Destination>> {
        self.vindex.map(&mut self.backend, values)
    }
    fn verify(&mut self, values: &[Value], ids: &[KeyspaceId]) -> Result<Vec<bool>> {
        self.vindex.verify(&mut self.backend, values, ids)
    }
}

fn other_id(id: KeyspaceId) -> KeyspaceId {
    KeyspaceId::new(id.get() ^ 1)
}

/// The keyspace ids a destination stands for, for `verify`: the ids themselves, or the ring
/// position behind a named shard.
fn claimed_ids(subject: &dyn Subject, value: &Value, dest: &Destination) -> Vec<KeyspaceId> {
    match dest {
        Destination::KeyspaceId(id) => vec![*id],
        Destination::KeyspaceIds(ids) => ids.clone(),
        Destination::Shard(_) => {
            let hashing = subject
                .vindex()
                .as_hashing()
                .expect("a vindex mapping to named shards must implement Hashing");
            vec![hashing.hash(value).unwrap().unwrap()]
        }
        _ => Vec::new(),
    }
}

/// Run the suite. Panics (with the vindex name) on the first violation.
fn check(subject: &mut dyn Subject, values: &[Value], shards: &KeyspaceShards) {
    let batch = check_determinism(subject, values);
    for (v, dest) in values.iter().zip(&batch) {
        check_one(subject, v, dest, shards);
    }
    // Length mismatches are errors, not panics or silent truncation.
    if !values.is_empty() {
        let name = subject.vindex().name().to_owned();
        assert!(subject.verify(values, &[]).is_err(), "{name}: length mismatch accepted");
    }
}

/// 1. Mapping is a function: same batch, same answer; a batch equals its values alone.
fn check_determinism(subject: &mut dyn Subject, values: &[Value]) -> Vec<Destination> {
    let name = subject.vindex().name().to_owned();
    let batch = subject.map(values).unwrap();
    assert_eq!(batch.len(), values.len(), "{name}: one destination per value");
    assert_eq!(subject.map(values).unwrap(), batch, "{name}: not deterministic");
    for (v, d) in values.iter().zip(&batch) {
        assert_eq!(
            &subject.map(std::slice::from_ref(v)).unwrap()[0],
            d,
            "{name}: batch and single map differ for {v}"
        );
    }
    batch
}

/// 2.-4. for one value and the destination `map` gave it.
fn check_one(subject: &mut dyn Subject, v: &Value, dest: &Destination, shards: &KeyspaceShards) {
    let name = subject.vindex().name().to_owned();
    let unique = subject.vindex().is_unique();
    let verify = |subject: &mut dyn Subject, id: KeyspaceId| {
        subject.verify(std::slice::from_ref(v), &[id]).unwrap()[0]
    };
    // 2. NULL.
    if v.is_null() {
        assert_eq!(dest, &Destination::None, "{name}: NULL must map nowhere");
        assert!(!verify(subject, KeyspaceId::MIN), "{name}: NULL verified");
        return;
    }
    // 3. verify agrees with map.
    let ids = claimed_ids(&*subject, v, dest);
    for id in &ids {
        assert!(verify(subject, *id), "{name}: verify({v}, {id}) disagrees with map");
        if unique {
            assert!(
                !verify(subject, other_id(*id)),
                "{name}: verify accepts a keyspace id map did not give for {v}"
            );
        }
    }
    if dest.is_none() {
        for probe in [KeyspaceId::MIN, KeyspaceId::MAX] {
            assert!(!verify(subject, probe), "{name}: {v} maps nowhere but verifies");
        }
    }
    // 4. Exactly one shard per key.
    let resolved = dest.resolve(shards).unwrap();
    if unique {
        assert!(
            matches!(dest, Destination::None | Destination::KeyspaceId(_) | Destination::Shard(_)),
            "{name}: unique vindex produced {dest}"
        );
        assert_eq!(resolved.len(), usize::from(!dest.is_none()), "{name}: {v} → {dest}");
    }
    if let Destination::Shard(shard) = dest {
        assert_eq!(resolved.len(), 1);
        assert_eq!(&resolved[0].name, shard);
    } else {
        for id in &ids {
            let owners = shards.shards().iter().filter(|s| s.range.contains(*id)).count();
            assert_eq!(owners, 1, "{name}: keyspace id {id} has {owners} owners");
        }
        let mut owners: Vec<&Shard> = ids.iter().map(|id| shards.shard_for(*id)).collect();
        owners.sort_by_key(|s| s.range);
        owners.dedup();
        assert_eq!(resolved, owners, "{name}: {v} → {dest} resolved to the wrong shards");
    }
}

fn arb_value(ty: ColumnType) -> BoxedStrategy<Value> {
    let non_null = match ty {
        ColumnType::Int => any::<i64>().prop_map(Value::Int).boxed(),
        ColumnType::Text => "[a-zé0-9 ]{0,12}".prop_map(Value::Text).boxed(),
        ColumnType::Bytea => proptest::collection::vec(any::<u8>(), 0..12).prop_map(Value::Bytes).boxed(),
        ColumnType::Uuid => any::<[u8; 16]>().prop_map(Value::Uuid).boxed(),
        ColumnType::Timestamp | ColumnType::TimestampTz => any::<i64>().prop_map(Value::Timestamp).boxed(),
    };
    prop_oneof![1 => Just(Value::Null), 9 => non_null].boxed()
}

fn arb_values(ty: ColumnType) -> impl Strategy<Value = Vec<Value>> {
    proptest::collection::vec(arb_value(ty), 1..24)
}

fn functional(v: impl Vindex + 'static) -> Functional {
    Functional(Arc::new(v))
}

const CASES: u32 = 24;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn hash_conforms((shards, ty, values) in (arb_keyspace_shards(), prop_oneof![
        Just(ColumnType::Int), Just(ColumnType::Text), Just(ColumnType::Bytea),
        Just(ColumnType::Uuid), Just(ColumnType::Timestamp)
    ]).prop_flat_map(|(shards, ty)| (Just(shards), Just(ty), arb_values(ty)))) {
        check(&mut functional(HashVindex::new("hash", ty)), &values, &shards);
    }

    #[test]
    fn numeric_conforms(shards in arb_keyspace_shards(), values in arb_values(ColumnType::Int)) {
        check(&mut functional(Numeric::new("numeric")), &values, &shards);
    }

    #[test]
    fn range_conforms(shards in arb_keyspace_shards(), values in arb_values(ColumnType::Int)) {
        let bounded = RangeVindex::parse("range", ColumnType::Int, "-1000 => 10, 0 => 80, 1000000 => c0").unwrap();
        check(&mut functional(bounded), &values, &shards);
        let open = RangeVindex::parse("range_min", ColumnType::Int, "MINVALUE => 00, 0 => 4000000000000001, 50 => ff").unwrap();
        check(&mut functional(open), &values, &shards);
    }

    #[test]
    fn range_text_conforms(shards in arb_keyspace_shards(), values in arb_values(ColumnType::Text)) {
        let r = RangeVindex::parse("range_text", ColumnType::Text, "MINVALUE => 00, 'f' => 55, 'p' => aa").unwrap();
        check(&mut functional(r), &values, &shards);
    }

    #[test]
    fn consistent_hash_conforms(shards in arb_keyspace_shards(), values in arb_values(ColumnType::Int), vnodes in prop_oneof![Just(1u32), Just(16), Just(DEFAULT_VNODES)]) {
        let names = shards.shards().iter().map(|s| s.name.clone()).collect();
        let ring = ConsistentHash::new("ring", ColumnType::Int, names, vnodes).unwrap();
        check(&mut functional(ring), &values, &shards);
    }

    #[test]
    fn lookup_unique_conforms(shards in arb_keyspace_shards(), values in arb_values(ColumnType::Text), ids in proptest::collection::vec(any::<u64>(), 24)) {
        let table = LookupTable::new("lk", "v", "keyspace_id", ColumnType::Text, true).unwrap();
        let mut subject = WithBackend { vindex: Lookup::new("lookup_unique", table), backend: MemoryBackend::default() };
        // Populate with the first half of the values (later duplicates keep their first id).
        let half = values.len() / 2;
        for (v, id) in values[..half].iter().zip(&ids) {
            if !v.is_null() && subject.vindex.map(&mut subject.backend, std::slice::from_ref(v)).unwrap()[0].is_none() {
                subject.vindex.create(&mut subject.backend, std::slice::from_ref(v), &[KeyspaceId::new(*id)]).unwrap();
            }
        }
        check(&mut subject, &values, &shards);
    }

    #[test]
    fn lookup_non_unique_conforms(shards in arb_keyspace_shards(), values in arb_values(ColumnType::Int), ids in proptest::collection::vec(any::<u64>(), 24)) {
        let table = LookupTable::new("lk", "v", "keyspace_id", ColumnType::Int, false).unwrap();
        let mut subject = WithBackend { vindex: Lookup::new("lookup", table), backend: MemoryBackend::default() };
        // Values get one to three keyspace ids each.
        for (i, (v, id)) in values.iter().zip(&ids).enumerate() {
            let extra: Vec<KeyspaceId> = (0..=(i % 3) as u64).map(|k| KeyspaceId::new(id.wrapping_add(k << 60))).collect();
            let vs = vec![v.clone(); extra.len()];
            subject.vindex.create(&mut subject.backend, &vs, &extra).unwrap();
        }
        check(&mut subject, &values, &shards);
    }
}

/// The suite is not vacuous: a vindex that breaks one rule fails it.
mod catches_broken_vindexes {
    use super::*;
    use crate::vindex::SingleColumn;

    /// Hash, except that `verify` accepts anything.
    #[derive(Debug)]
    struct LaxVerify(HashVindex);

    impl Vindex for LaxVerify {
        fn name(&self) -> &str {
            "lax"
        }
        fn type_name(&self) -> &'static str {
            "lax"
        }
        fn column_type(&self) -> ColumnType {
            ColumnType::Int
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
    }

    impl SingleColumn for LaxVerify {
        fn map_one(&self, value: &Value) -> Result<Destination> {
            self.0.map_one(value)
        }
        fn verify_one(&self, _: &Value, _: KeyspaceId) -> Result<bool> {
            Ok(true)
        }
    }

    /// Claims to be unique but maps every value to two keyspace ids.
    #[derive(Debug)]
    struct FakeUnique;

    impl Vindex for FakeUnique {
        fn name(&self) -> &str {
            "fake_unique"
        }
        fn type_name(&self) -> &'static str {
            "fake_unique"
        }
        fn column_type(&self) -> ColumnType {
            ColumnType::Int
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
    }

    impl SingleColumn for FakeUnique {
        fn map_one(&self, value: &Value) -> Result<Destination> {
            Ok(match value {
                Value::Int(i) => {
                    Destination::KeyspaceIds(vec![KeyspaceId::new(*i as u64), KeyspaceId::new(!(*i as u64))])
                }
                _ => Destination::None,
            })
        }
        fn verify_one(&self, value: &Value, id: KeyspaceId) -> Result<bool> {
            Ok(matches!(value, Value::Int(i) if id.get() == *i as u64 || id.get() == !(*i as u64)))
        }
    }

    fn shards() -> KeyspaceShards {
        crate::testing::shards_from_cover(crate::key_range::KeyRange::FULL.split(4).unwrap())
    }

    #[test]
    #[should_panic(expected = "verify accepts a keyspace id map did not give")]
    fn lax_verify_is_caught() {
        check(&mut functional(LaxVerify(HashVindex::new("h", ColumnType::Int))), &[Value::Int(1)], &shards());
    }

    #[test]
    #[should_panic(expected = "unique vindex produced")]
    fn non_unique_output_from_a_unique_vindex_is_caught() {
        check(&mut functional(FakeUnique), &[Value::Int(1)], &shards());
    }
}
