#![allow(clippy::unwrap_used)]

use super::*;
use crate::value::ColumnType;

const VSCHEMA: &str = r#"
[keyspaces.main]
sharded = false

[keyspaces.main.tables.user_seq]
type = "sequence"

[keyspaces.main.tables.user_email_lookup]

[keyspaces.commerce]
sharded = true

[keyspaces.commerce.vindexes.hash_id]
type = "hash"
params = { column_type = "int" }

[keyspaces.commerce.vindexes.email_idx]
type = "lookup_unique"
params = { column_type = "text", table = "main.user_email_lookup", from = "email" }
owner = "users"

[keyspaces.commerce.vindexes.ring]
type = "consistent_hash"
params = { column_type = "text", shards = "-80,80-", vnodes = 64 }

[keyspaces.commerce.tables.users]
column_vindexes = [
  { column = "id", vindex = "hash_id" },
  { column = "email", vindex = "email_idx" },
  { column = "email", vindex = "ring" },
]
auto_increment = { column = "id", sequence = "main.user_seq" }

[keyspaces.commerce.tables.orders]
column_vindexes = [{ column = "user_id", vindex = "hash_id" }]

[keyspaces.commerce.tables.countries]
type = "reference"
"#;

fn parse(text: &str) -> VSchema {
    VSchema::from_toml(text).unwrap()
}

/// Validate the base document after `edit`, returning the error text.
fn error_after(edit: impl FnOnce(&mut VSchema)) -> String {
    let mut doc = parse(VSCHEMA);
    edit(&mut doc);
    doc.validate().unwrap_err().to_string()
}

fn commerce(doc: &mut VSchema) -> &mut KeyspaceDef {
    doc.keyspaces.get_mut("commerce").unwrap()
}

fn main_ks(doc: &mut VSchema) -> &mut KeyspaceDef {
    doc.keyspaces.get_mut("main").unwrap()
}

fn cv(column: &str, vindex: &str) -> ColumnVindexDef {
    ColumnVindexDef { column: column.into(), vindex: vindex.into() }
}

#[test]
fn valid_document_resolves() {
    let v = parse(VSCHEMA).validate().unwrap();
    let users = v.table("users").unwrap();
    assert!(users.is_sharded());
    assert_eq!(users.keyspace(), "commerce");
    let primary = users.primary_vindex().unwrap();
    assert_eq!((primary.column.as_str(), primary.vindex.name()), ("id", "hash_id"));
    let by_email: Vec<&str> = users.vindexes_for_column("email").iter().map(|cv| cv.vindex.name()).collect();
    assert_eq!(by_email, ["ring", "email_idx"], "cheapest first");
    assert_eq!(
        users.auto_increment(),
        Some(&AutoIncrement {
            column: "id".into(),
            sequence_keyspace: "main".into(),
            sequence_table: "user_seq".into(),
        })
    );
    assert_eq!(v.table("countries").unwrap().kind(), TableKind::Reference);
    assert!(!v.table("countries").unwrap().is_sharded());
    assert!(!v.table("user_seq").unwrap().is_sharded());
    let ring = v.keyspace("commerce").unwrap().vindex("ring").unwrap();
    assert_eq!(ring.column_type(), ColumnType::Text);
    assert!(!v.keyspace("main").unwrap().is_sharded());
    assert_eq!(v.tables().count(), 5);
}

#[test]
fn toml_and_json_roundtrip() {
    let doc = parse(VSCHEMA);
    assert_eq!(VSchema::from_toml(&doc.to_toml().unwrap()).unwrap(), doc);
    assert_eq!(VSchema::from_json(&doc.to_json().unwrap()).unwrap(), doc);
    // Integer parameters are kept as text.
    assert_eq!(doc.keyspaces["commerce"].vindexes["ring"].params["vnodes"], "64");
}

#[test]
fn unknown_fields_are_rejected() {
    let err = VSchema::from_toml("[keyspaces.ks]\nshraded = true").unwrap_err();
    assert!(err.to_string().contains("shraded"), "{err}");
    let err = VSchema::from_toml("[keyspaces.ks.tables.t]\ntype = \"view\"").unwrap_err();
    assert!(err.to_string().contains("view"), "{err}");
}

#[test]
fn table_errors_name_what_is_wrong() {
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|d| {
                commerce(d).tables.get_mut("orders").unwrap().column_vindexes[0].vindex = "nope".into()
            }),
            "keyspace commerce, table orders, column user_id: unknown vindex nope",
        ),
        (
            Box::new(|d| commerce(d).tables.get_mut("orders").unwrap().column_vindexes.clear()),
            "keyspace commerce, table orders: a table in a sharded keyspace needs a primary vindex",
        ),
        (
            Box::new(|d| {
                commerce(d).vindexes.get_mut("email_idx").unwrap().type_name = "lookup".into();
                commerce(d).tables.get_mut("orders").unwrap().column_vindexes =
                    vec![cv("email", "email_idx")];
            }),
            "keyspace commerce, table orders, column email: primary vindex email_idx is not unique",
        ),
        (
            Box::new(|d| {
                commerce(d).tables.get_mut("orders").unwrap().column_vindexes = vec![cv("email", "email_idx")]
            }),
            "keyspace commerce, table orders, column email: primary vindex email_idx needs a lookup table",
        ),
        (
            Box::new(|d| {
                commerce(d).tables.get_mut("orders").unwrap().column_vindexes.push(cv("user_id", "hash_id"))
            }),
            "keyspace commerce, table orders, column user_id: vindex hash_id listed twice",
        ),
        (
            Box::new(|d| {
                let t = commerce(d).tables.get("orders").unwrap().clone();
                main_ks(d).tables.insert("orders".into(), t);
            }),
            "table orders is defined in keyspace commerce and in keyspace main",
        ),
        (
            Box::new(|d| {
                main_ks(d)
                    .tables
                    .insert("flags".into(), TableDef { kind: TableKind::Reference, ..TableDef::default() });
            }),
            "keyspace main, table flags: reference table in an unsharded keyspace",
        ),
        (
            Box::new(|d| {
                main_ks(d).tables.insert(
                    "t".into(),
                    TableDef { column_vindexes: vec![cv("id", "hash_id")], ..TableDef::default() },
                );
            }),
            "keyspace main, table t: an unsharded keyspace has no vindexes",
        ),
        (
            Box::new(|d| {
                let v = commerce(d).vindexes["hash_id"].clone();
                main_ks(d).vindexes.insert("h".into(), v);
            }),
            "keyspace main: an unsharded keyspace has no vindexes",
        ),
    ];
    check_errors(cases);
}

#[test]
fn sequence_vindex_and_owner_errors_name_what_is_wrong() {
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|d| {
                commerce(d).tables.insert("seq2".into(), TableDef { kind: TableKind::Sequence, ..TableDef::default() });
            }),
            "keyspace commerce, table seq2: sequence tables must be in an unsharded keyspace",
        ),
        (
            Box::new(|d| {
                commerce(d).tables.get_mut("countries").unwrap().column_vindexes = vec![cv("code", "hash_id")];
            }),
            "keyspace commerce, table countries: a reference table cannot have column vindexes",
        ),
        (
            Box::new(|d| {
                commerce(d).tables.get_mut("users").unwrap().auto_increment.as_mut().unwrap().sequence = "missing_seq".into();
            }),
            "keyspace commerce, table users: unknown sequence missing_seq",
        ),
        (
            Box::new(|d| {
                commerce(d).tables.get_mut("users").unwrap().auto_increment.as_mut().unwrap().sequence = "commerce.user_seq".into();
            }),
            "keyspace commerce, table users: unknown sequence commerce.user_seq",
        ),
        (
            Box::new(|d| {
                commerce(d).tables.get_mut("users").unwrap().auto_increment.as_mut().unwrap().sequence = "orders".into();
            }),
            "keyspace commerce, table users: orders is not a sequence table",
        ),
        (
            Box::new(|d| {
                commerce(d).vindexes.get_mut("hash_id").unwrap().params.insert("vnodes".into(), "3".into());
            }),
            "keyspace commerce, vindex hash_id: vindex hash_id (type hash): unknown parameter \"vnodes\" (accepted: column_type)",
        ),
        (
            Box::new(|d| commerce(d).vindexes.get_mut("hash_id").unwrap().type_name = "md5".into()),
            "keyspace commerce, vindex hash_id: vindex hash_id: unknown vindex type \"md5\"",
        ),
        (
            Box::new(|d| commerce(d).vindexes.get_mut("email_idx").unwrap().owner = Some("orders".into())),
            "keyspace commerce, vindex email_idx: owner orders: the owner table does not use this vindex",
        ),
        (
            Box::new(|d| commerce(d).vindexes.get_mut("email_idx").unwrap().owner = Some("ghost".into())),
            "keyspace commerce, vindex email_idx: owner ghost: no such table in this keyspace",
        ),
        (
            Box::new(|d| commerce(d).vindexes.get_mut("hash_id").unwrap().owner = Some("users".into())),
            "keyspace commerce, vindex hash_id: owner users: only lookup vindexes have an owner",
        ),
    ];
    check_errors(cases);
}

type Edit = Box<dyn FnOnce(&mut VSchema)>;

fn check_errors(cases: Vec<(Edit, &str)>) {
    for (edit, want) in cases {
        let got = error_after(edit);
        assert!(got.starts_with(want), "\n got: {got}\nwant: {want}");
    }
}

#[test]
fn shard_map_must_fit() {
    let v = parse(VSCHEMA).validate().unwrap();
    let good = ShardMap::from_toml(
        r#"
version = 1
[[keyspaces.main.shards]]
name = "0"
range = "-"
[[keyspaces.commerce.shards]]
name = "-80"
range = "-80"
[[keyspaces.commerce.shards]]
name = "80-"
range = "80-"
"#,
    )
    .unwrap();
    v.check_shard_map(&good).unwrap();
    let split = good.split_by_range("commerce", "-80", 2).unwrap();
    let err = v.check_shard_map(&split).unwrap_err().to_string();
    assert_eq!(err, "keyspace commerce, vindex ring: keyspace commerce has no shard -80");
    let two_main = good.split_by_range("main", "0", 2).unwrap();
    assert_eq!(
        v.check_shard_map(&two_main).unwrap_err().to_string(),
        "keyspace main: an unsharded keyspace must have exactly one shard"
    );
    let only_main =
        ShardMap::new(1, [("main".to_owned(), good.keyspace("main").unwrap().shards().to_vec())]).unwrap();
    assert_eq!(
        v.check_shard_map(&only_main).unwrap_err().to_string(),
        "keyspace commerce: keyspace is missing from the shard map"
    );
    let mut extra =
        good.keyspaces().map(|k| (k.keyspace().to_owned(), k.shards().to_vec())).collect::<Vec<_>>();
    extra.push(("ghost".to_owned(), good.keyspace("main").unwrap().shards().to_vec()));
    assert_eq!(
        v.check_shard_map(&ShardMap::new(1, extra).unwrap()).unwrap_err().to_string(),
        "keyspace ghost: keyspace is not in the VSchema"
    );
}
