//! Crate-level tests of the public API (the golden files cover the shapes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use crate::{Action, KeyExpr, PlanError, Planner, PlannerOptions, Target};

const VSCHEMA: &str = include_str!("../testdata/vschema.toml");

fn vschema() -> Arc<vindex::ValidatedVSchema> {
    Arc::new(vindex::VSchema::from_toml(VSCHEMA).unwrap().validate().unwrap())
}

fn planner(default_keyspace: Option<&str>) -> Planner {
    let options =
        PlannerOptions { default_keyspace: default_keyspace.map(str::to_owned), ..Default::default() };
    Planner::new(vschema(), options).unwrap()
}

#[test]
fn planner_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Planner>();
    check::<crate::Plan>();
}

#[test]
fn options_are_validated() {
    let bad = |ks: &str| {
        let options = PlannerOptions { default_keyspace: Some(ks.into()), ..Default::default() };
        Planner::new(vschema(), options).unwrap_err()
    };
    assert_eq!(bad("nope").sqlstate(), "22023");
    assert!(bad("commerce").to_string().contains("must be unsharded"));
    assert_eq!(PlannerOptions::default().cache_capacity, 4096);
}

#[test]
fn unknown_tables_without_default_keyspace() {
    let p = planner(None);
    let err = p.plan("SELECT * FROM nowhere").unwrap_err();
    assert_eq!(err.sqlstate(), "42P01");
    assert_eq!(
        err.to_string(),
        "pg-router: table \"nowhere\" is not in the VSchema and no default keyspace is configured"
    );
    // Unparsable statements without sharded tables go to any shard.
    let plan = p.plan("CHECKPOINT").unwrap();
    assert!(matches!(&plan.action, Action::Route(r) if matches!(r.target, Target::Any)));
}

#[test]
fn lookup_tables_must_live_in_an_unsharded_keyspace() {
    let doc = |table: &str| {
        format!(
            r#"
[keyspaces.main]
[keyspaces.commerce]
sharded = true
vindexes.hash_id = {{ type = "hash", params = {{ column_type = "int" }} }}
vindexes.email_idx = {{ type = "lookup_unique", params = {{ column_type = "text", table = "{table}", from = "email" }}, owner = "users" }}
tables.users = {{ column_vindexes = [{{ column = "id", vindex = "hash_id" }}, {{ column = "email", vindex = "email_idx" }}] }}
tables.emails = {{ column_vindexes = [{{ column = "email_id", vindex = "hash_id" }}] }}
"#
        )
    };
    let build = |table: &str, default: Option<&str>| {
        let vs = vindex::VSchema::from_toml(&doc(table)).unwrap().validate().unwrap();
        let options = PlannerOptions { default_keyspace: default.map(str::to_owned), ..Default::default() };
        Planner::new(Arc::new(vs), options).map(|_| ()).map_err(|e| e.to_string())
    };
    assert_eq!(build("email_lookup", Some("main")), Ok(()));
    let e = build("emails", Some("main")).unwrap_err();
    assert!(e.contains("lookup vindex email_idx must be a plain table of an unsharded keyspace"), "{e}");
    let e = build("email_lookup", None).unwrap_err();
    assert!(e.contains("is in no keyspace of the VSchema and there is no default keyspace"), "{e}");
}

#[test]
fn cache_returns_the_same_arc_and_caches_errors() {
    let p = planner(Some("main"));
    let a = p.plan("SELECT * FROM users WHERE id = $1").unwrap();
    let b = p.plan("SELECT * FROM users WHERE id = $1").unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    let e1 = p.plan("SELECT string_agg(name, ',') FROM users").unwrap_err();
    let e2 = p.plan("SELECT string_agg(name, ',') FROM users").unwrap_err();
    assert_eq!(e1, e2);
    assert_eq!(p.cache.len(), 2);
    let uncached = planner(Some("main"));
    let options = PlannerOptions { default_keyspace: Some("main".into()), cache_capacity: 0 };
    let no_cache = Planner::new(vschema(), options).unwrap();
    let c = no_cache.plan("SELECT 1").unwrap();
    let d = no_cache.plan("SELECT 1").unwrap();
    assert!(!Arc::ptr_eq(&c, &d));
    assert_eq!(uncached.vschema().keyspaces().count(), 3);
}

#[test]
fn insert_split_template() {
    let p = planner(Some("main"));
    let plan =
        p.plan("INSERT INTO orders (user_id, total) VALUES (1, $3), ($1, 20), (3, $3) RETURNING id").unwrap();
    assert_eq!(plan.params, 3);
    let Action::InsertSplit(split) = &plan.action else { panic!("{plan:?}") };
    assert_eq!(split.keys, [KeyExpr::Literal(1.into()), KeyExpr::Param(1), KeyExpr::Literal(3.into())]);
    assert!(split.returning);
    assert_eq!(split.template.row_count(), 3);
    let (sql, map) = split.template.sql_for_rows(&[2, 0]);
    assert_eq!(sql, "INSERT INTO orders (user_id, total) VALUES (3, $1), (1, $1) RETURNING id");
    assert_eq!(map, [3]);
    let (sql, map) = split.template.sql_for_rows(&[1]);
    assert_eq!(sql, "INSERT INTO orders (user_id, total) VALUES ($1, 20) RETURNING id");
    assert_eq!(map, [1]);
}

#[test]
fn scatter_fields() {
    let p = planner(Some("main"));
    let plan = p
        .plan("SELECT status, avg(total) FROM orders GROUP BY status ORDER BY 2 DESC LIMIT 3 OFFSET 1")
        .unwrap();
    let Action::Route(route) = &plan.action else { panic!() };
    let s = route.scatter.as_ref().unwrap();
    assert_eq!(s.visible, 2);
    assert_eq!(s.group.as_deref(), Some(&[0][..]));
    assert_eq!((s.offset, s.limit), (1, Some(3)));
    assert!(!s.sql.contains("LIMIT"), "{}", s.sql);
    assert!(s.final_order.is_some());
}

#[test]
fn errors_have_kinds() {
    let p = planner(Some("main"));
    let e = p.plan("SELECT id FROM users ORDER BY id LIMIT $1").unwrap_err();
    assert!(matches!(e, PlanError::Unsupported { .. }));
    assert_eq!(e.kind(), "unsupported");
    let e = p.plan("SELECT * FROM users WHERE id = 'abc'").unwrap_err();
    assert_eq!((e.kind(), e.sqlstate()), ("key_value", "22P02"));
}

/// Texts that differ only in literals share one parse, and each still routes by its own key.
#[test]
fn literal_variants_share_a_shape_but_keep_their_keys() {
    let p = planner(Some("main"));
    let keys = |sql: &str| match &p.plan(sql).unwrap().action {
        Action::Route(r) => match &r.target {
            Target::Keys { values, .. } if r.scatter.is_none() => values.clone(),
            other => panic!("{sql}: {other:?}"),
        },
        other => panic!("{sql}: {other:?}"),
    };
    let exact = |sql: &str| p.plan_uncached(sql).unwrap().explain();
    for sql in [
        "SELECT * FROM users WHERE id = 5",
        "SELECT * FROM users WHERE id = 6",
        "SELECT name FROM users WHERE id = '7' AND name <> 'x' LIMIT 3",
        "UPDATE users SET name = 'it''s' WHERE id = 8",
        "SELECT * FROM users WHERE id = 9;",
    ] {
        assert_eq!(p.plan(sql).unwrap().explain(), exact(sql), "{sql}");
    }
    assert_eq!(keys("SELECT * FROM users WHERE id = 5"), vec![KeyExpr::Literal(vindex::Value::Int(5))]);
    assert_eq!(keys("SELECT * FROM users WHERE id = 6"), vec![KeyExpr::Literal(vindex::Value::Int(6))]);
    // None of them needed planning by exact text: each came from its shape.
    assert_eq!(p.cache.len(), 0);
    // Shapes whose plan depends on more than one key value are planned by their exact text.
    for sql in [
        "SELECT * FROM users WHERE id = 1; SELECT * FROM users WHERE id = 2",
        "SELECT * FROM users WHERE id IN (1, 2)",
        "SELECT * FROM users WHERE id = -5",
        "SELECT id FROM users ORDER BY id LIMIT 5",
        "SELECT * FROM users WHERE id = 1.5",
        "/* pg_router: shard=-80 */ SELECT * FROM users WHERE id = 1",
        "SHOW ROUTE FOR SELECT * FROM users WHERE id = 1",
    ] {
        assert_eq!(p.plan(sql).unwrap().explain(), exact(sql), "{sql}");
    }
    // A literal that is no valid key falls back to exact planning and its error.
    let bad = "SELECT * FROM users WHERE id = 'nope'";
    assert_eq!(p.plan(bad).unwrap_err(), p.plan_uncached(bad).unwrap_err());
}

#[test]
fn auto_increment_adds_the_column_with_the_router_ids() {
    let p = planner(Some("main"));
    let plan = p.plan("INSERT INTO users (name) VALUES ($1), ('b')").unwrap();
    let Action::InsertSplit(s) = &plan.action else { panic!("{plan:?}") };
    let fill = s.auto_increment.as_ref().unwrap();
    assert!(fill.is_key && s.keys.is_empty());
    assert_eq!((fill.sequence_keyspace.as_str(), fill.sequence.as_str()), ("main", "user_seq"));
    let (sql, map) = s.template.sql_for_rows_filled(&[1, 0], "id", &[11, 10]);
    assert_eq!(sql, "INSERT INTO users (name, id) VALUES ('b', 11), ($1, 10)");
    assert_eq!(map, vec![1]);
}

#[test]
fn written_keyspaces_name_where_a_statement_writes() {
    let p = planner(Some("main"));
    let cases: &[(&str, &[&str])] = &[
        ("SELECT * FROM users WHERE id = 1", &[]),
        ("SELECT * FROM users", &[]),
        ("INSERT INTO users (id, name) VALUES (1, 'a')", &["commerce"]),
        ("INSERT INTO users (id, name) VALUES (1, 'a'), (2, 'b')", &["commerce"]),
        ("UPDATE users SET name = 'x' WHERE id = 1", &["commerce"]),
        ("DELETE FROM orders", &["commerce"]),
        ("INSERT INTO countries (code) VALUES ('de')", &["commerce"]),
        ("INSERT INTO settings (k) VALUES (1)", &["main"]),
        ("INSERT INTO audit_log (k) VALUES (1)", &["audit"]),
        ("CREATE INDEX ON users (name)", &["commerce"]),
        ("BEGIN", &[]),
        ("SET search_path = public", &[]),
    ];
    for (sql, want) in cases {
        let plan = p.plan(sql).unwrap();
        assert_eq!(plan.written_keyspaces(), *want, "{sql}");
    }
}
