#![allow(clippy::unwrap_used)]

use super::*;
use crate::testing::arb_keyspace_shards;
use proptest::prelude::*;

const MAP: &str = r#"
version = 7

[[keyspaces.commerce.shards]]
name = "80-"
range = "80-"

[[keyspaces.commerce.shards]]
name = "-80"
range = "-80"

[[keyspaces.main.shards]]
name = "0"
range = "-"
"#;

fn name(s: &str) -> ShardName {
    ShardName::new(s).unwrap()
}

fn shard(n: &str, r: &str) -> Shard {
    Shard::new(name(n), r.parse().unwrap())
}

#[test]
fn documented_example_parses() {
    let map = ShardMap::from_toml(&crate::testing::doc_toml_block(include_str!("../shard_map.rs"))).unwrap();
    assert_eq!(map.version(), 7);
    assert_eq!(map, ShardMap::from_toml(MAP).unwrap());
}

#[test]
fn parses_sorts_and_roundtrips() {
    let map = ShardMap::from_toml(MAP).unwrap();
    assert_eq!(map.version(), 7);
    let commerce = map.keyspace("commerce").unwrap();
    let names: Vec<&str> = commerce.shards().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["-80", "80-"]);
    assert_eq!(map.keyspace("main").unwrap().shards().len(), 1);
    assert_eq!(ShardMap::from_toml(&map.to_toml().unwrap()).unwrap(), map);
    assert_eq!(ShardMap::from_json(&map.to_json().unwrap()).unwrap(), map);
    // serde through the validating TryFrom as well.
    let via_serde: ShardMap = toml::from_str(MAP).unwrap();
    assert_eq!(via_serde, map);
}

#[test]
fn invalid_documents_name_the_problem() {
    let gap = ShardMap::from_toml(
        r#"
version = 1
[[keyspaces.ks.shards]]
name = "a"
range = "-40"
[[keyspaces.ks.shards]]
name = "b"
range = "80-"
"#,
    )
    .unwrap_err();
    assert_eq!(gap.to_string(), "keyspace ks: gap between -40 and 80-: 40-80 is not covered");
    let dup = ShardMap::new(1, [("ks".to_owned(), vec![shard("a", "-80"), shard("a", "80-")])]).unwrap_err();
    assert_eq!(dup.to_string(), "keyspace ks: shard name a used twice");
    let unknown_field = ShardMap::from_toml("version = 1\nowner = \"x\"").unwrap_err();
    assert!(unknown_field.to_string().contains("owner"), "{unknown_field}");
    let bad_range = ShardMap::from_toml("version = 1\n[[keyspaces.ks.shards]]\nname = \"a\"\nrange = \"8-\"")
        .unwrap_err();
    assert!(bad_range.to_string().contains("hex digits"), "{bad_range}");
    let bad_name = ShardMap::from_toml("version = 1\n[[keyspaces.ks.shards]]\nname = \"a b\"\nrange = \"-\"")
        .unwrap_err();
    assert!(bad_name.to_string().contains("whitespace"), "{bad_name}");
    assert!(ShardMap::from_toml(MAP).unwrap().keyspace("nope").is_err());
}

#[test]
fn split_halves_and_bumps_the_version() {
    let map = ShardMap::from_toml(MAP).unwrap();
    let next = map.split("commerce", "-80", &[name("-40"), name("40-80")]).unwrap();
    assert_eq!(next.version(), 8);
    let ranges: Vec<String> = next
        .keyspace("commerce")
        .unwrap()
        .shards()
        .iter()
        .map(|s| format!("{}={}", s.name, s.range))
        .collect();
    assert_eq!(ranges, ["-40=-40", "40-80=40-80", "80-=80-"]);
    // The other keyspace is untouched.
    assert_eq!(next.keyspace("main").unwrap(), map.keyspace("main").unwrap());

    let changes: Vec<String> = ShardMap::diff(&map, &next).iter().map(ToString::to_string).collect();
    assert_eq!(
        changes,
        [
            "added commerce/-40 on shard -40",
            "removed commerce/-80 from shard -80",
            "added commerce/40-80 on shard 40-80",
        ]
    );
    assert!(ShardMap::diff(&map, &map).is_empty());
}

#[test]
fn split_into_n_and_by_range_names() {
    let map = ShardMap::from_toml(MAP).unwrap();
    let next = map.split_by_range("main", "0", 4).unwrap();
    let names: Vec<&str> = next.keyspace("main").unwrap().shards().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["-40", "40-80", "80-c0", "c0-"]);
    let three = map.split("commerce", "80-", &[name("x"), name("y"), name("z")]).unwrap();
    assert_eq!(three.keyspace("commerce").unwrap().shards().len(), 4);
}

#[test]
fn split_errors() {
    let map = ShardMap::from_toml(MAP).unwrap();
    assert!(matches!(
        map.split("commerce", "-80", &[name("x")]),
        Err(Error::SplitTooFewShards { got: 1, .. })
    ));
    assert!(matches!(
        map.split("commerce", "nope", &[name("x"), name("y")]),
        Err(Error::UnknownShard { .. })
    ));
    assert!(matches!(map.split("nope", "-80", &[name("x"), name("y")]), Err(Error::UnknownKeyspace { .. })));
    // A new name colliding with a remaining shard.
    assert!(matches!(
        map.split("commerce", "-80", &[name("80-"), name("y")]),
        Err(Error::DuplicateShardName { .. })
    ));
    let max = ShardMap::new(u64::MAX, [("ks".to_owned(), vec![shard("a", "-")])]).unwrap();
    assert!(matches!(max.split("ks", "a", &[name("x"), name("y")]), Err(Error::VersionOverflow { .. })));
}

#[test]
fn diff_reports_renames_and_keyspace_changes() {
    let old = ShardMap::new(1, [("ks".to_owned(), vec![shard("a", "-")])]).unwrap();
    let new = ShardMap::new(
        2,
        [("ks".to_owned(), vec![shard("b", "-")]), ("other".to_owned(), vec![shard("o", "-")])],
    )
    .unwrap();
    assert_eq!(
        ShardMap::diff(&old, &new),
        vec![
            ShardMapChange::Changed {
                keyspace: "ks".into(),
                range: KeyRange::FULL,
                old_shard: name("a"),
                new_shard: name("b"),
            },
            ShardMapChange::Added { keyspace: "other".into(), range: KeyRange::FULL, shard: name("o") },
        ]
    );
}

#[test]
fn shard_for_is_the_owner() {
    let map = ShardMap::from_toml(MAP).unwrap();
    let ks = map.keyspace("commerce").unwrap();
    assert_eq!(ks.shard_for(KeyspaceId::new(0)).name.as_str(), "-80");
    assert_eq!(ks.shard_for(KeyspaceId::MAX).name.as_str(), "80-");
    let via_map = map.resolve("commerce", &Destination::KeyspaceId(KeyspaceId::new(1 << 63))).unwrap();
    assert_eq!(via_map[0].name.as_str(), "80-");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every keyspace id belongs to exactly one shard, and `shard_for` finds it.
    #[test]
    fn every_id_has_exactly_one_owner(shards in arb_keyspace_shards(), probe in any::<u64>()) {
        let id = KeyspaceId::new(probe);
        let owners: Vec<&Shard> = shards.shards().iter().filter(|s| s.range.contains(id)).collect();
        prop_assert_eq!(owners.len(), 1);
        prop_assert_eq!(shards.shard_for(id), owners[0]);
    }

    /// Splitting any shard keeps the map valid, covers the same space, and the diff shows the
    /// old range removed and the new ranges added (and nothing else).
    #[test]
    fn split_keeps_cover_and_diff_is_exact(shards in arb_keyspace_shards(), pick in any::<prop::sample::Index>(), parts in 2u32..5) {
        let map = ShardMap::new(1, [("ks".to_owned(), shards.shards().to_vec())]).unwrap();
        let victim = &shards.shards()[pick.index(shards.shards().len())];
        let next = map.split_by_range("ks", victim.name.as_str(), parts).unwrap();
        prop_assert_eq!(next.version(), 2);
        let new_shards = next.keyspace("ks").unwrap().shards();
        prop_assert_eq!(new_shards.len(), shards.shards().len() + parts as usize - 1);
        let changes = ShardMap::diff(&map, &next);
        let removed: Vec<_> = changes.iter().filter(|c| matches!(c, ShardMapChange::Removed { .. })).collect();
        let added: Vec<_> = changes.iter().filter_map(|c| match c {
            ShardMapChange::Added { range, .. } => Some(*range),
            _ => None,
        }).collect();
        prop_assert_eq!(removed.len(), 1);
        prop_assert_eq!(added.len(), parts as usize);
        prop_assert_eq!(changes.len(), 1 + parts as usize);
        prop_assert!(added.iter().all(|r| victim.range.contains_range(r)));
        let total: u128 = added.iter().map(KeyRange::size).sum();
        prop_assert_eq!(total, victim.range.size());
    }
}
