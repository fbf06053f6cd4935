//! The embedded control plane with real PostgreSQL shards: a router routes new statements by a
//! shard map changed through the admin API, and the control store survives a router restart.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use control::client::AdminClient;
use control::http::Method;
use pg_router_tests::*;

const ROUTING: &str = r#"
[routing]
default_keyspace = "main"

[vschema.keyspaces.main]
sharded = false

[vschema.keyspaces.ks]
sharded = true

[vschema.keyspaces.ks.vindexes.hash_id]
type = "hash"
params = { column_type = "int" }

[vschema.keyspaces.ks.tables.items]
column_vindexes = [{ column = "id", vindex = "hash_id" }]

[shard_map]
version = 1
keyspaces.main.shards = [{ name = "s0", range = "-" }]
keyspaces.ks.shards = [{ name = "s0", range = "-80" }, { name = "s1", range = "80-" }]
"#;

/// The shard map spread over all four shards.
fn four_shard_map() -> serde_json::Value {
    serde_json::json!({
        "version": 0,
        "keyspaces": {
            "main": { "shards": [{ "name": "s0", "range": "-" }] },
            "ks": { "shards": [
                { "name": "s0", "range": "-40" }, { "name": "s1", "range": "40-80" },
                { "name": "s2", "range": "80-c0" }, { "name": "s3", "range": "c0-" }
            ] }
        }
    })
}

fn options(control: Option<String>) -> RouterOptions {
    RouterOptions {
        cluster: Some(sharded_cluster()),
        shards: 4,
        extra: ROUTING.to_owned(),
        control,
        ..RouterOptions::default()
    }
}

fn admin(r: &Router) -> AdminClient {
    AdminClient::new(vec![r.control_addr.unwrap().to_string()], Some(CONTROL_TOKEN.to_owned()))
}

fn count_on(shard: usize, table: &str, lo: i64, hi: i64) -> i64 {
    let sql = format!("SELECT count(*) FROM {table} WHERE id BETWEEN {lo} AND {hi}");
    sharded_cluster().psql(shard, DATABASE, &sql).unwrap().trim().parse().unwrap()
}

/// Waits until the router reports (after applying) routing version `v` to its control store.
async fn wait_for_router_version(a: &AdminClient, v: u64) -> Duration {
    let start = Instant::now();
    loop {
        let routers: serde_json::Value = a.get("/v1/routers").await.unwrap();
        let applied = routers.as_object().unwrap().values().all(|r| r["version"].as_u64() >= Some(v));
        if applied && !routers.as_object().unwrap().is_empty() {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "router never applied version {v}: {routers}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn insert_ids(c: &tokio_postgres::Client, table: &str, ids: std::ops::RangeInclusive<i64>) {
    let stmt = c.prepare(&format!("INSERT INTO {table} (id, v) VALUES ($1, $2)")).await.unwrap();
    for id in ids {
        c.execute(&stmt, &[&id, &format!("v{id}")]).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_routes_new_statements_by_a_changed_shard_map() {
    let cl = sharded_cluster();
    for i in 0..4 {
        cl.psql(
            i,
            DATABASE,
            "DROP TABLE IF EXISTS items; CREATE TABLE items (id bigint PRIMARY KEY, v text)",
        )
        .unwrap();
    }
    let r = Router::start(options(None));
    let a = admin(&r);
    let catalog: serde_json::Value = a.get("/v1/catalog").await.unwrap();
    assert_eq!(catalog["version"], 1, "bootstrapped from the config file: {catalog}");
    assert_eq!(catalog["shards"].as_object().unwrap().len(), 4);

    let c = r.connect().await.unwrap();
    insert_ids(&c, "items", 1001..=1200).await;
    assert_eq!(count_on(2, "items", 1001, 1200) + count_on(3, "items", 1001, 1200), 0);
    assert_eq!(count_on(0, "items", 1001, 1200) + count_on(1, "items", 1001, 1200), 200);

    // A transaction open across the change keeps the version it started with.
    let tx_client = r.connect().await.unwrap();
    tx_client.batch_execute("BEGIN").await.unwrap();
    tx_client.batch_execute("SELECT count(*) FROM items").await.unwrap();

    // Writes need the token; an invalid map is refused with the vindex checks' reason.
    let anonymous = AdminClient::new(vec![r.control_addr.unwrap().to_string()], None);
    let e = anonymous
        .send::<serde_json::Value>(Method::PUT, "/v1/shard_map", &four_shard_map())
        .await
        .unwrap_err();
    assert_eq!(e.status, Some(401), "{e}");
    let mut gap = four_shard_map();
    gap["keyspaces"]["ks"]["shards"].as_array_mut().unwrap().pop();
    let e = a.send::<serde_json::Value>(Method::PUT, "/v1/shard_map", &gap).await.unwrap_err();
    assert_eq!(e.status, Some(400), "{e}");
    assert!(e.message.contains("shard_map"), "{e}");

    let outcome: serde_json::Value = a.send(Method::PUT, "/v1/shard_map", &four_shard_map()).await.unwrap();
    assert_eq!(outcome, serde_json::json!({ "outcome": "applied", "version": 2 }));
    let took = wait_for_router_version(&a, 2).await;
    eprintln!("router applied version 2 {took:?} after the write was acknowledged");

    insert_ids(&c, "items", 2001..=2200).await;
    let per_shard: Vec<i64> = (0..4).map(|i| count_on(i, "items", 2001, 2200)).collect();
    assert_eq!(per_shard.iter().sum::<i64>(), 200);
    assert!(per_shard.iter().all(|n| *n > 0), "new rows spread over all four shards: {per_shard:?}");
    for id in [2001i64, 2077, 2150, 2200] {
        let row = c.query_one("SELECT v FROM items WHERE id = $1", &[&id]).await.unwrap();
        assert_eq!(row.get::<_, &str>(0), format!("v{id}"));
    }
    let n: i64 =
        c.query_one("SELECT count(*) FROM items WHERE id BETWEEN 2001 AND 2200", &[]).await.unwrap().get(0);
    assert_eq!(n, 200);

    // The transaction opened before the change still routes by version 1: none of its rows
    // reach s2 or s3, where version 2 would have put about half of them.
    insert_ids(&tx_client, "items", 3001..=3100).await;
    tx_client.batch_execute("COMMIT").await.unwrap();
    assert_eq!(count_on(2, "items", 3001, 3100) + count_on(3, "items", 3001, 3100), 0);
    assert_eq!(count_on(0, "items", 3001, 3100) + count_on(1, "items", 3001, 3100), 100);
    let routers: serde_json::Value = a.get("/v1/routers").await.unwrap();
    assert_eq!(routers.as_object().unwrap().len(), 1, "{routers}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_survives_a_router_restart_and_wins_over_the_config_file() {
    let dir = sharded_cluster().dir.join(format!("control-restart-{}", std::process::id()));
    let port = free_port();
    let section = format!(
        "\n[control]\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{CONTROL_TOKEN}\"\n",
        dir.display()
    );
    let mut r = Router::start(options(Some(section.clone())));
    let a = admin(&r);
    let _: serde_json::Value = a.send(Method::PUT, "/v1/shard_map", &four_shard_map()).await.unwrap();
    let _: serde_json::Value = a
        .send(Method::POST, "/v1/write_block", &serde_json::json!({ "keyspace": "ks", "blocked": true }))
        .await
        .unwrap();
    wait_for_router_version(&a, 3).await;
    tokio::task::spawn_blocking(move || r.begin_shutdown().join().unwrap()).await.unwrap();

    // Same data dir, same config file (still the two-shard map): the store's version wins.
    let r = Router::start(options(Some(section)));
    let a = admin(&r);
    let catalog: serde_json::Value = a.get("/v1/catalog").await.unwrap();
    assert_eq!(catalog["version"], 3, "{catalog}");
    assert_eq!(catalog["shard_map"]["keyspaces"]["ks"]["shards"].as_array().unwrap().len(), 4);
    assert_eq!(catalog["write_blocked"], serde_json::json!(["ks"]));
    wait_for_router_version(&a, 3).await;

    // A second router on the same data dir is refused, naming the directory.
    let dup = toml_for(&dir, free_port());
    let config =
        router::config::RawConfig::from_toml(&Router::config_toml(&options(Some(dup)), free_port(), None))
            .unwrap()
            .validate()
            .unwrap();
    let shared = router::server::shared(config).unwrap();
    let e = router::control::start(shared).await.err().unwrap();
    assert!(format!("{e:#}").contains("in use by another process"), "{e:#}");
}

fn toml_for(dir: &std::path::Path, port: u16) -> String {
    format!("\n[control]\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{port}\"\n", dir.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_added_and_moved_through_the_api_serve_new_statements() {
    let cl = sharded_cluster();
    for i in 0..5 {
        cl.psql(
            i,
            DATABASE,
            "DROP TABLE IF EXISTS gadgets; CREATE TABLE gadgets (id bigint PRIMARY KEY, v text)",
        )
        .unwrap();
    }
    // The config file knows only s0 and s1.
    let r = Router::start(RouterOptions {
        shards: 2,
        extra: ROUTING.replace("items", "gadgets"),
        ..options(None)
    });
    let a = admin(&r);
    // s2 and s3 exist only in the control store.
    for i in [2usize, 3] {
        let ep = serde_json::json!({ "host": "127.0.0.1", "port": cl.ports[i] });
        let _: serde_json::Value = a.send(Method::PUT, &format!("/v1/shards/s{i}"), &ep).await.unwrap();
    }
    let out: serde_json::Value = a.send(Method::PUT, "/v1/shard_map", &four_shard_map()).await.unwrap();
    let v = out["version"].as_u64().unwrap();
    wait_for_router_version(&a, v).await;
    let c = r.connect().await.unwrap();
    insert_ids(&c, "gadgets", 1..=200).await;
    let per_shard: Vec<i64> = (0..4).map(|i| count_on(i, "gadgets", 1, 200)).collect();
    assert!(per_shard.iter().all(|n| *n > 0), "rows on all four shards: {per_shard:?}");
    let n: i64 = c.query_one("SELECT count(*) FROM gadgets", &[]).await.unwrap().get(0);
    assert_eq!(n, 200);

    // The router's pooled connection to s3's server, by its port there.
    let on_s3 = (1..=200).find(|id| count_on(3, "gadgets", *id, *id) == 1).unwrap();
    let sql = format!("SELECT inet_client_port() FROM gadgets WHERE id = {on_s3}");
    let port: i32 = c.query_one(sql.as_str(), &[]).await.unwrap().get(0);
    let connected_from_port = |server: usize| -> bool {
        let sql = format!("SELECT count(*) FROM pg_stat_activity WHERE client_port = {port}");
        cl.psql(server, DATABASE, &sql).unwrap().trim() == "1"
    };
    assert!(connected_from_port(3), "the router's idle connection to s3's server");

    // s3 moves to another server: new statements go there.
    let ep = serde_json::json!({ "host": "127.0.0.1", "port": cl.ports[4] });
    let out: serde_json::Value = a.send(Method::PUT, "/v1/shards/s3", &ep).await.unwrap();
    wait_for_router_version(&a, out["version"].as_u64().unwrap()).await;
    insert_ids(&c, "gadgets", 1001..=1200).await;
    assert_eq!(count_on(3, "gadgets", 1001, 1200), 0, "nothing reaches s3's old server");
    assert!(count_on(4, "gadgets", 1001, 1200) > 0, "s3's range now lands on its new server");
    let total: i64 = [0, 1, 2, 4].iter().map(|i| count_on(*i, "gadgets", 1001, 1200)).sum();
    assert_eq!(total, 200);
    // Nothing stays connected to the old server (pool.idle_timeout_ms is ten minutes here).
    let moved = Instant::now();
    while connected_from_port(3) {
        assert!(moved.elapsed() < Duration::from_secs(10), "the old server's idle connection was kept");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A shard still in the map cannot be removed; one no keyspace uses can.
    let e = a.call::<serde_json::Value>(Method::DELETE, "/v1/shards/s2", None).await.unwrap_err();
    assert_eq!(e.status, Some(400), "{e}");
    let _: serde_json::Value = a
        .send(Method::PUT, "/v1/shards/spare", &serde_json::json!({"host": "10.9.9.9", "port": 5432}))
        .await
        .unwrap();
    let out: serde_json::Value = a.call(Method::DELETE, "/v1/shards/spare", None).await.unwrap();
    assert_eq!(out["outcome"], "applied");
}

/// A statement prepared before a VSchema change routes by the new VSchema at its next Bind (the
/// plan a prepared statement keeps is only valid for the topology it was made under).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_statement_routes_by_a_vschema_changed_after_it_was_prepared() {
    let cl = sharded_cluster();
    for i in 0..2 {
        cl.psql(
            i,
            DATABASE,
            "DROP TABLE IF EXISTS pitems; CREATE TABLE pitems (id bigint PRIMARY KEY, v text)",
        )
        .unwrap();
    }
    let r = Router::start(RouterOptions {
        shards: 2,
        extra: ROUTING.replace("items", "pitems"),
        ..options(None)
    });
    let a = admin(&r);
    let c = r.connect().await.unwrap();
    insert_ids(&c, "pitems", 1..=40).await;
    // An id that hash_id put on s1: a numeric vindex maps every small id to s0 (range -80).
    let on_s1: Vec<i64> = (1..=40).filter(|id| count_on(1, "pitems", *id, *id) == 1).collect();
    let id = *on_s1.first().expect("some of 40 hashed ids land on s1");
    let select = c.prepare("SELECT v FROM pitems WHERE id = $1").await.unwrap();
    assert_eq!(c.query(&select, &[&id]).await.unwrap().len(), 1, "found on s1 by hash");

    let numeric = serde_json::json!({
        "keyspaces": {
            "main": { "sharded": false },
            "ks": {
                "sharded": true,
                "vindexes": { "by_value": { "type": "numeric" } },
                "tables": { "pitems": { "column_vindexes": [{ "column": "id", "vindex": "by_value" }] } }
            }
        }
    });
    let out: serde_json::Value = a.send(Method::PUT, "/v1/vschema", &numeric).await.unwrap();
    assert_eq!(out["outcome"], "applied", "{out}");
    wait_for_router_version(&a, out["version"].as_u64().unwrap()).await;

    // The same prepared statement now goes to s0, where the row is not.
    assert_eq!(c.query(&select, &[&id]).await.unwrap().len(), 0, "routed by the numeric vindex to s0");
    let plan: String = c
        .simple_query(&format!("SHOW ROUTE FOR SELECT v FROM pitems WHERE id = {id}"))
        .await
        .unwrap()
        .into_iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap();
    assert!(plan.contains("by_value"), "{plan}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_blocked_keyspace_refuses_writes_but_serves_reads() {
    let cl = sharded_cluster();
    for i in 0..4 {
        cl.psql(
            i,
            DATABASE,
            "DROP TABLE IF EXISTS widgets; CREATE TABLE widgets (id bigint PRIMARY KEY, v text)",
        )
        .unwrap();
    }
    cl.psql(0, DATABASE, "DROP TABLE IF EXISTS notes; CREATE TABLE notes (id int, t text)").unwrap();
    let r = Router::start(RouterOptions { extra: ROUTING.replace("items", "widgets"), ..options(None) });
    let a = admin(&r);
    let c = r.connect().await.unwrap();
    insert_ids(&c, "widgets", 1..=20).await;

    let out: serde_json::Value = a
        .send(Method::POST, "/v1/write_block", &serde_json::json!({ "keyspace": "ks", "blocked": true }))
        .await
        .unwrap();
    wait_for_router_version(&a, out["version"].as_u64().unwrap()).await;
    for sql in [
        "INSERT INTO widgets (id, v) VALUES (100, 'x')",
        "INSERT INTO widgets (id, v) VALUES (101, 'x'), (102, 'y')",
        "UPDATE widgets SET v = 'z' WHERE id = 3",
        "UPDATE widgets SET v = 'z'",
        "DELETE FROM widgets WHERE id IN (1, 2)",
        "CREATE INDEX widgets_v ON widgets (v)",
    ] {
        let e = c.batch_execute(sql).await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("25006"), "{sql}: {e}");
        assert!(e.as_db_error().unwrap().message().contains("keyspace ks is write-blocked"), "{e}");
    }
    // The extended protocol is refused at Bind, and a transaction the refusal hits is aborted.
    let e = c.execute("INSERT INTO widgets (id, v) VALUES ($1, $2)", &[&200i64, &"p"]).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("25006"), "{e}");
    c.batch_execute("BEGIN").await.unwrap();
    assert!(c.batch_execute("DELETE FROM widgets WHERE id = 5").await.is_err());
    let e = c.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("25P02"), "{e}");
    c.batch_execute("ROLLBACK").await.unwrap();
    // Reads go on; other keyspaces take writes.
    let n: i64 = c.query_one("SELECT count(*) FROM widgets", &[]).await.unwrap().get(0);
    assert_eq!(n, 20);
    let v: String = c.query_one("SELECT v FROM widgets WHERE id = $1", &[&7i64]).await.unwrap().get(0);
    assert_eq!(v, "v7");
    c.batch_execute("INSERT INTO notes VALUES (1, 'main is not blocked')").await.unwrap();

    let out: serde_json::Value = a
        .send(Method::POST, "/v1/write_block", &serde_json::json!({ "keyspace": "ks", "blocked": false }))
        .await
        .unwrap();
    wait_for_router_version(&a, out["version"].as_u64().unwrap()).await;
    c.batch_execute("INSERT INTO widgets (id, v) VALUES (100, 'x')").await.unwrap();
    let n: i64 = c.query_one("SELECT count(*) FROM widgets", &[]).await.unwrap().get(0);
    assert_eq!(n, 21);
}
