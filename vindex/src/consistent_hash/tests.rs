#![allow(clippy::unwrap_used)]

use super::*;
use crate::registry::{Params, Registry};
use crate::siphash::stable_hash;
use proptest::prelude::*;

fn names(n: &[&str]) -> Vec<ShardName> {
    n.iter().map(|s| ShardName::new(s).unwrap()).collect()
}

fn ring(n: &[&str], vnodes: u32) -> ConsistentHash {
    ConsistentHash::new("c", ColumnType::Int, names(n), vnodes).unwrap()
}

fn shard(c: &ConsistentHash, i: i64) -> String {
    match c.map_one(&Value::Int(i)).unwrap() {
        Destination::Shard(s) => s.to_string(),
        other => panic!("expected a shard, got {other}"),
    }
}

/// The placement is pinned: computed here independently of `hashring` from the documented
/// formula (first vnode point >= position, wrapping), and compared with the vindex.
#[test]
fn placement_follows_the_documented_formula() {
    let shard_names = ["a", "b", "c"];
    let c = ring(&shard_names, 16);
    let mut points: Vec<(u64, &str)> = Vec::new();
    for s in shard_names {
        for i in 0u32..16 {
            let mut bytes = s.as_bytes().to_vec();
            bytes.push(0);
            bytes.extend_from_slice(&i.to_be_bytes());
            points.push((stable_hash(&bytes), s));
        }
    }
    points.sort();
    for key in -200i64..200 {
        let pos = stable_hash(&key.to_be_bytes());
        let want = points.iter().find(|(p, _)| *p >= pos).unwrap_or(&points[0]).1;
        assert_eq!(shard(&c, key), want, "key {key}");
    }
}

#[test]
fn shard_order_in_params_does_not_matter() {
    let a = ring(&["x", "y", "z"], 32);
    let b = ring(&["z", "x", "y"], 32);
    for i in 0..500 {
        assert_eq!(shard(&a, i), shard(&b, i));
    }
}

#[test]
fn verify_checks_the_ring_position() {
    let c = ring(&["a", "b"], 8);
    let v = Value::Int(7);
    let pos = c.hash(&v).unwrap().unwrap();
    assert_eq!(pos, KeyspaceId::new(stable_hash(&7i64.to_be_bytes())));
    assert!(c.verify_one(&v, pos).unwrap());
    assert!(!c.verify_one(&v, KeyspaceId::new(pos.get() ^ 1)).unwrap());
    assert_eq!(c.map_one(&Value::Null).unwrap(), Destination::None);
    assert!(matches!(c.map_for_insert(&Value::Null), Err(Error::NullShardingKey { .. })));
}

#[test]
fn parameters() {
    let r = Registry::builtin();
    let p = |kv: &[(&str, &str)]| -> Params {
        kv.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    };
    let built =
        r.build("c", "consistent_hash", &p(&[("column_type", "int"), ("shards", " a , b ")])).unwrap();
    assert_eq!(built.cost(), 1);
    for (shards, vnodes, needle) in [
        ("a,a", "8", "listed twice"),
        ("a,,b", "8", "empty"),
        ("a", "0", "must be 1..=4096"),
        ("a", "lots", "expected an integer"),
    ] {
        let err = r
            .build(
                "c",
                "consistent_hash",
                &p(&[("column_type", "int"), ("shards", shards), ("vnodes", vnodes)]),
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{shards}/{vnodes}: {err}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Adding a shard to N moves about 1/(N+1) of the keys, and every moved key moves to the
    /// new shard (nothing is reshuffled between old shards).
    #[test]
    fn adding_a_shard_moves_about_one_in_n_plus_one(n in 2usize..12, salt in any::<u32>()) {
        let old_names: Vec<String> = (0..n).map(|i| format!("s{salt:x}-{i}")).collect();
        let new_name = format!("s{salt:x}-new");
        let mut all_names = old_names.clone();
        all_names.push(new_name.clone());
        let old_refs: Vec<&str> = old_names.iter().map(String::as_str).collect();
        let all_refs: Vec<&str> = all_names.iter().map(String::as_str).collect();
        let before = ring(&old_refs, DEFAULT_VNODES);
        let after = ring(&all_refs, DEFAULT_VNODES);
        const KEYS: i64 = 3000;
        let base = i64::from(salt) * KEYS;
        let mut moved = 0;
        for k in base..base + KEYS {
            let (a, b) = (shard(&before, k), shard(&after, k));
            if a != b {
                prop_assert_eq!(&b, &new_name, "key {} moved between old shards", k);
                moved += 1;
            }
        }
        let fraction = f64::from(moved) / KEYS as f64;
        let expected = 1.0 / (n as f64 + 1.0);
        prop_assert!(
            (fraction - expected).abs() <= 0.5 * expected,
            "moved {} of keys, expected about {}", fraction, expected
        );
    }
}
