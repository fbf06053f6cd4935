//! Routing through pg-router over real PostgreSQL shards: single-shard fast path, scatter
//! merges, split INSERTs, broadcast DDL, cross-shard transactions, refusals.
#![allow(clippy::unwrap_used)]

use pg_router_tests::{
    commerce_routing, run_tool, sharded_cluster, sqlstate, Cluster, Router, RouterOptions,
};
use tokio_postgres::SimpleQueryMessage;

fn router(shards: usize) -> Router {
    Router::start(RouterOptions {
        cluster: Some(sharded_cluster()),
        shards,
        extra: commerce_routing(shards),
        ..RouterOptions::default()
    })
}

const SCHEMA: &str = "
    CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, country text, score numeric(10,2));
    CREATE TABLE orders (id bigint, user_id bigint NOT NULL, amount numeric(12,2), qty int,
                         PRIMARY KEY (user_id, id));
    CREATE TABLE countries (code text PRIMARY KEY, name text);
";

/// Rows of a simple query as text.
async fn rows(c: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let msgs = c.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e} {:?}", e.as_db_error()));
    msgs.into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect()),
            _ => None,
        })
        .collect()
}

async fn count(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
}

fn shard_count(c: &Cluster, shard: usize, sql: &str) -> i64 {
    c.psql(shard, "app", sql).unwrap().trim().parse().unwrap()
}

async fn setup(c: &tokio_postgres::Client) {
    for stmt in SCHEMA.split(';').filter(|s| !s.trim().is_empty()) {
        c.batch_execute(stmt).await.unwrap_or_else(|e| panic!("{stmt}: {e}"));
    }
    let mut values = Vec::new();
    for id in 1..=40 {
        values.push(format!("({id}, 'user{id}', '{}', {}.50)", ["de", "fr", "us"][id % 3], id * 3));
    }
    let sql = format!("INSERT INTO users (id, name, country, score) VALUES {}", values.join(", "));
    assert_eq!(c.execute(&sql, &[]).await.unwrap(), 40);
    let mut values = Vec::new();
    for id in 1..=120 {
        values.push(format!("({id}, {}, {}.25, {})", id % 40 + 1, id, id % 7));
    }
    c.batch_execute(&format!("INSERT INTO orders (id, user_id, amount, qty) VALUES {}", values.join(", ")))
        .await
        .unwrap();
    c.batch_execute("INSERT INTO countries VALUES ('de', 'Germany'), ('fr', 'France'), ('us', 'USA')")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_land_on_one_shard_and_reads_find_them() {
    let r = router(4);
    let cl = sharded_cluster();
    let c = r.connect().await.unwrap();
    setup(&c).await;
    // DDL reached every shard; each user lives on exactly one; the reference table is everywhere.
    let per_shard: Vec<i64> = (0..4).map(|s| shard_count(cl, s, "SELECT count(*) FROM users")).collect();
    assert_eq!(per_shard.iter().sum::<i64>(), 40, "{per_shard:?}");
    assert!(per_shard.iter().filter(|n| **n > 0).count() >= 3, "hash spreads rows: {per_shard:?}");
    for s in 0..4 {
        assert_eq!(shard_count(cl, s, "SELECT count(*) FROM countries"), 3);
    }
    // Orders are co-located with their user.
    for s in 0..4 {
        let strays = shard_count(
            cl,
            s,
            "SELECT count(*) FROM orders o WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = o.user_id)",
        );
        assert_eq!(strays, 0, "shard {s} holds orders of users it does not hold");
    }
    // Point reads, simple and extended (binary int8 parameter).
    assert_eq!(rows(&c, "SELECT name FROM users WHERE id = 17").await, vec![vec![Some("user17".into())]]);
    let row = c.query_one("SELECT name, score FROM users WHERE id = $1", &[&23i64]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "user23");
    let stmt = c.prepare("SELECT count(*) FROM orders WHERE user_id = $1").await.unwrap();
    for uid in [1i64, 2, 3, 39] {
        let n: i64 = c.query_one(&stmt, &[&uid]).await.unwrap().get(0);
        assert_eq!(n, 3, "user {uid}");
    }
    // IN-list over several shards, merged in order.
    assert_eq!(
        rows(&c, "SELECT id FROM users WHERE id IN (5, 1, 33, 12) ORDER BY id DESC").await,
        vec![
            vec![Some("33".into())],
            vec![Some("12".into())],
            vec![Some("5".into())],
            vec![Some("1".into())]
        ]
    );
    // Co-located join routed by key; reference join.
    assert_eq!(
        rows(&c, "SELECT count(*) FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id = 7").await,
        vec![vec![Some("3".into())]]
    );
    assert_eq!(
        rows(&c, "SELECT c.name FROM users u JOIN countries c ON c.code = u.country WHERE u.id = 2").await,
        vec![vec![Some("USA".into())]]
    );
    // No match: NULL key.
    assert!(rows(&c, "SELECT * FROM users WHERE id = NULL").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scatter_merges_like_one_server() {
    let r = router(4);
    let c = r.connect().await.unwrap();
    setup(&c).await;
    let one = |v: &str| vec![vec![Some(v.to_owned())]];
    assert_eq!(rows(&c, "SELECT count(*) FROM users").await, one("40"));
    assert_eq!(
        rows(&c, "SELECT sum(qty), min(amount), max(amount) FROM orders").await,
        vec![vec![Some("358".into()), Some("1.25".into()), Some("120.25".into())]]
    );
    assert_eq!(rows(&c, "SELECT avg(qty) FROM orders").await, one("2.9833333333333333"));
    assert_eq!(rows(&c, "SELECT count(*) FROM users WHERE id > 1000").await, one("0"));
    assert_eq!(
        rows(&c, "SELECT id, name FROM users ORDER BY score DESC LIMIT 3 OFFSET 1").await,
        vec![
            vec![Some("39".into()), Some("user39".into())],
            vec![Some("38".into()), Some("user38".into())],
            vec![Some("37".into()), Some("user37".into())],
        ]
    );
    assert_eq!(
        rows(&c, "SELECT country, count(*), sum(score) FROM users GROUP BY country ORDER BY country").await,
        vec![
            vec![Some("de".into()), Some("13".into()), Some("825.50".into())],
            vec![Some("fr".into()), Some("14".into()), Some("868.00".into())],
            vec![Some("us".into()), Some("13".into()), Some("786.50".into())],
        ]
    );
    assert_eq!(
        rows(&c, "SELECT country FROM users GROUP BY country HAVING count(*) > 13 ORDER BY 1").await,
        one("fr")
    );
    assert_eq!(rows(&c, "SELECT count(DISTINCT country) FROM users").await, one("3"));
    assert_eq!(
        rows(&c, "SELECT DISTINCT qty FROM orders ORDER BY qty DESC LIMIT 2").await,
        vec![vec![Some("6".into())], vec![Some("5".into())]]
    );
    // Extended protocol with binary results.
    let rows_ext =
        c.query("SELECT id, score FROM users WHERE id > $1 ORDER BY id LIMIT 3", &[&30i64]).await.unwrap();
    let ids: Vec<i64> = rows_ext.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, vec![31, 32, 33]);
    let n: i64 = c.query_one("SELECT count(*) FROM orders WHERE qty = $1", &[&3i32]).await.unwrap().get(0);
    assert_eq!(n, 17);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_route_split_and_broadcast() {
    let r = router(4);
    let cl = sharded_cluster();
    let c = r.connect().await.unwrap();
    setup(&c).await;
    // RETURNING rows come back in VALUES order even though the rows went to several shards.
    let ret = rows(
        &c,
        "INSERT INTO users (id, name) VALUES (101, 'a'), (102, 'b'), (103, 'c'), (104, 'd') RETURNING id",
    )
    .await;
    assert_eq!(ret, (101..=104).map(|i| vec![Some(i.to_string())]).collect::<Vec<_>>());
    // Extended-protocol split INSERT with parameters.
    let n = c
        .execute("INSERT INTO users (id, name) VALUES ($1, $2), ($3, $4)", &[&201i64, &"x", &202i64, &"y"])
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(rows(&c, "SELECT name FROM users WHERE id = 202").await, vec![vec![Some("y".into())]]);
    // Scattered UPDATE sums the shards' counts; keyed UPDATE touches one shard.
    assert_eq!(c.execute("UPDATE orders SET qty = qty + 1 WHERE qty = 0", &[]).await.unwrap(), 17);
    assert_eq!(c.execute("UPDATE users SET name = 'renamed' WHERE id = $1", &[&5i64]).await.unwrap(), 1);
    assert_eq!(c.execute("DELETE FROM orders WHERE amount > 100", &[]).await.unwrap(), 21);
    // Reference-table writes reach every shard; the count is the statement's, not the sum.
    assert_eq!(c.execute("UPDATE countries SET name = upper(name)", &[]).await.unwrap(), 3);
    for s in 0..4 {
        assert_eq!(
            cl.psql(s, "app", "SELECT name FROM countries WHERE code = 'de'").unwrap().trim(),
            "GERMANY"
        );
    }
    // A sharding key cannot change in place.
    let e = c.execute("UPDATE users SET id = 1000 WHERE id = 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{e}");
    // An INSERT into a sharded table without the key is refused clearly.
    let e = c.batch_execute("INSERT INTO orders (id, amount) VALUES (1, 2)").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_span_shards() {
    let r = router(4);
    let c = r.connect().await.unwrap();
    setup(&c).await;
    // Rolled back on every shard it touched.
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("INSERT INTO users (id, name) VALUES (301, 'p')").await.unwrap();
    c.batch_execute("INSERT INTO users (id, name) VALUES (302, 'q'), (303, 'r'), (304, 's')").await.unwrap();
    assert_eq!(rows(&c, "SELECT count(*) FROM users WHERE id > 300").await, vec![vec![Some("4".into())]]);
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(rows(&c, "SELECT count(*) FROM users WHERE id > 300").await, vec![vec![Some("0".into())]]);
    // Committed on every shard it touched (tokio-postgres transaction: extended protocol).
    let mut c2 = r.connect().await.unwrap();
    let tx = c2.transaction().await.unwrap();
    for id in 311..=318i64 {
        tx.execute("INSERT INTO users (id, name) VALUES ($1, 'tx')", &[&id]).await.unwrap();
    }
    let n: i64 = tx.query_one("SELECT count(*) FROM users WHERE name = 'tx'", &[]).await.unwrap().get(0);
    assert_eq!(n, 8, "a transaction reads its own writes across shards");
    tx.commit().await.unwrap();
    assert_eq!(rows(&c, "SELECT count(*) FROM users WHERE name = 'tx'").await, vec![vec![Some("8".into())]]);
    // An error aborts the whole transaction, as on one server.
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("INSERT INTO users (id, name) VALUES (321, 'e')").await.unwrap();
    let e = c.batch_execute("INSERT INTO users (id, name) VALUES (1, 'dup')").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("23505"));
    let e = c.batch_execute("SELECT count(*) FROM users").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("25P02"), "{e}");
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(rows(&c, "SELECT count(*) FROM users WHERE id = 321").await, vec![vec![Some("0".into())]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_route_hints_and_refusals() {
    let r = router(4);
    let c = r.connect().await.unwrap();
    setup(&c).await;
    let plan = rows(&c, "SHOW ROUTE FOR SELECT * FROM users WHERE id = 1").await;
    assert!(!plan.is_empty());
    let text: Vec<String> = plan.into_iter().map(|r| r[0].clone().unwrap()).collect();
    assert!(text.join("\n").contains("hash_id"), "{text:?}");
    // A routing hint pins a statement to a shard.
    let n = rows(&c, "/* pg_router: shard=s2 */ SELECT count(*) FROM users").await;
    let direct = shard_count(sharded_cluster(), 2, "SELECT count(*) FROM users");
    assert_eq!(n, vec![vec![Some(direct.to_string())]]);
    // Shapes the router cannot answer correctly are refused with 0A000.
    for sql in [
        "SELECT u.id FROM users u JOIN products p ON p.sku = u.name",
        "SELECT id, row_number() OVER (ORDER BY id) FROM users",
        "SELECT string_agg(name, ',') FROM users",
    ] {
        let e = c.batch_execute(sql).await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{sql}: {e}");
    }
    // The session is still fine.
    assert_eq!(rows(&c, "SELECT 1").await, vec![vec![Some("1".into())]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_scripts_run_across_shards_in_every_mode() {
    let r = router(4);
    let c = r.connect().await.unwrap();
    setup(&c).await;
    let dir = std::env::temp_dir().join(format!("pgr-scripts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scripts = [
        ("point.sql", "\\set id random(1, 40)\nSELECT name FROM users WHERE id = :id;\n"),
        ("top.sql", "SELECT id, score FROM users ORDER BY score DESC, id LIMIT 10;\n"),
        ("count.sql", "SELECT count(*) FROM orders;\n"),
        ("group.sql", "SELECT country, count(*), avg(score) FROM users GROUP BY country;\n"),
        ("write.sql", "\\set id random(1, 40)\nBEGIN;\nUPDATE users SET score = score + 1 WHERE id = :id;\nSELECT count(*) FROM orders WHERE user_id = :id;\nEND;\n"),
    ];
    for (name, text) in scripts {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        for mode in ["simple", "extended", "prepared"] {
            let conninfo = r.conninfo("");
            let (ok, out) = pg_router_tests::run_tool(
                "pgbench",
                &[
                    "-n",
                    "-c",
                    "4",
                    "-j",
                    "2",
                    "-t",
                    "50",
                    "-M",
                    mode,
                    "-f",
                    path.to_str().unwrap(),
                    &conninfo,
                ],
            );
            assert!(ok && out.contains("number of failed transactions: 0 "), "{name} -M {mode}:\n{out}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sequence_hands_out_global_ids() {
    let r = router(4);
    let c = r.connect().await.unwrap();
    setup(&c).await;
    c.batch_execute("CREATE SEQUENCE order_ids").await.unwrap();
    let mut ids = Vec::new();
    for user in 1..=8i64 {
        // Inside a transaction that already holds the user's shard, nextval still goes to the
        // default shard: one sequence, no duplicates.
        c.batch_execute("BEGIN").await.unwrap();
        c.query_one("SELECT count(*) FROM orders WHERE user_id = $1", &[&user]).await.unwrap();
        let id: i64 = c.query_one("SELECT nextval('order_ids')", &[]).await.unwrap().get(0);
        c.execute("INSERT INTO orders (id, user_id, qty) VALUES ($1, $2, 1)", &[&id, &user]).await.unwrap();
        c.batch_execute("COMMIT").await.unwrap();
        ids.push(id);
    }
    assert_eq!(ids, (1..=8).collect::<Vec<i64>>());
}

/// A shard that goes down fails the statements that need it with a clear error; statements for
/// the other shards, and other sessions, keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_that_is_down_fails_only_what_needs_it() {
    let r = router(4);
    let cl = sharded_cluster();
    let c = r.connect().await.unwrap();
    setup(&c).await;
    // Find a user on shard 0 and one on shard 3.
    let on =
        |s: usize| -> i64 { cl.psql(s, "app", "SELECT min(id) FROM users").unwrap().trim().parse().unwrap() };
    let (alive, dead) = (on(0), on(3));
    cl.stop(3).unwrap();
    for sql in ["SELECT count(*) FROM users".to_owned(), format!("SELECT name FROM users WHERE id = {dead}")]
    {
        let e = c.simple_query(&sql).await.unwrap_err();
        let code = sqlstate(&e).unwrap_or_default();
        assert!(code.starts_with("08"), "{sql}: {e}");
        assert!(e.as_db_error().unwrap().message().contains("s3"), "{sql}: {e}");
    }
    // The session and a new one still reach the live shards.
    let name = rows(&c, &format!("SELECT name FROM users WHERE id = {alive}")).await;
    assert_eq!(name, vec![vec![Some(format!("user{alive}"))]]);
    let other = r.connect().await.unwrap();
    let n: i64 =
        other.query_one("SELECT count(*) FROM orders WHERE user_id = $1", &[&alive]).await.unwrap().get(0);
    assert_eq!(n, 3);
}

/// `auto_increment`: the router takes ids from the sequence, adds the column and routes each
/// row by its new id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_increment_fills_the_sharding_key() {
    let r = router(4);
    let cl = sharded_cluster();
    let c = r.connect().await.unwrap();
    c.batch_execute("CREATE SEQUENCE event_seq").await.unwrap();
    c.batch_execute("CREATE TABLE events (id bigint PRIMARY KEY, what text)").await.unwrap();
    let ids =
        rows(&c, "INSERT INTO events (what) VALUES ('a'), ('b'), ('c'), ('d') RETURNING id, what").await;
    let want: Vec<Vec<Option<String>>> = ["a", "b", "c", "d"]
        .iter()
        .enumerate()
        .map(|(i, w)| vec![Some((i + 1).to_string()), Some(w.to_string())])
        .collect();
    assert_eq!(ids, want);
    let n = c.execute("INSERT INTO events (what) VALUES ($1)", &[&"e"]).await.unwrap();
    assert_eq!(n, 1);
    let id: i64 = c.query_one("SELECT id FROM events WHERE what = 'e'", &[]).await.unwrap().get(0);
    assert_eq!(id, 5);
    // Each row is on exactly one shard, and a point read by id finds it.
    let total: i64 = (0..4).map(|s| shard_count(cl, s, "SELECT count(*) FROM events")).sum();
    assert_eq!(total, 5);
    for id in 1..=5i64 {
        let found = c.query("SELECT what FROM events WHERE id = $1", &[&id]).await.unwrap();
        assert_eq!(found.len(), 1, "id {id}");
    }
    // Without the sequence the error says how to fix it.
    c.batch_execute("DROP SEQUENCE event_seq").await.unwrap();
    let e = c.batch_execute("INSERT INTO events (what) VALUES ('x')").await.unwrap_err();
    assert!(e.as_db_error().unwrap().hint().unwrap_or_default().contains("CREATE SEQUENCE"), "{e}");
}

/// After an error, a transaction that spans shards commits nothing, however the error arose:
/// a statement the router refuses after a scatter, or a failing statement pipelined ahead of a
/// statement for another shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_transaction_commits_on_no_shard() {
    let r = router(4);
    let c = r.connect().await.unwrap();
    setup(&c).await;
    c.batch_execute("BEGIN").await.unwrap();
    assert_eq!(c.execute("UPDATE orders SET qty = 100 WHERE qty = 1", &[]).await.unwrap(), 18);
    let e = c.batch_execute("SELECT string_agg(name, ',') FROM users").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("0A000"));
    let e = c.batch_execute("SELECT 1 FROM users WHERE id = 3").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("25P02"), "{e}");
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(rows(&c, "SELECT count(*) FROM orders WHERE qty = 100").await, vec![vec![Some("0".into())]]);

    // Pipelined: a duplicate key on one shard, then an insert for another shard, then COMMIT.
    let mut c2 = r.connect().await.unwrap();
    let tx = c2.transaction().await.unwrap();
    // Prepared first: executing a prepared statement sends its Bind on the first poll, so
    // `join` sends them in this order. (With text, each future waits for its own Parse's reply
    // first, and on a multi-threaded runtime the second can see its reply, and send its Bind,
    // before the first is polled again.)
    let ins_dup = tx.prepare("INSERT INTO users (id, name) VALUES ($1, 'dup')").await.unwrap();
    let ins_new = tx.prepare("INSERT INTO users (id, name) VALUES ($1, 'new')").await.unwrap();
    let dup = tx.execute(&ins_dup, &[&1i64]);
    let new = tx.execute(&ins_new, &[&777i64]);
    let (a, b) = futures_util::future::join(dup, new).await;
    assert_eq!(sqlstate(&a.unwrap_err()).as_deref(), Some("23505"));
    assert!(b.is_err(), "the statement after the error must not run: {b:?}");
    let _ = tx.commit().await;
    assert_eq!(rows(&c, "SELECT count(*) FROM users WHERE id = 777").await, vec![vec![Some("0".into())]]);
    // Both sessions are usable afterwards.
    assert_eq!(rows(&c, "SELECT count(*) FROM users WHERE id = 1").await, vec![vec![Some("1".into())]]);
    assert_eq!(c2.query_one("SELECT count(*) FROM users", &[]).await.unwrap().get::<_, i64>(0), 40);
}

/// Extended-protocol transaction control and portals while a transaction moves between shards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_transactions_across_shards() {
    let r = router(4);
    let mut c = r.connect().await.unwrap();
    setup(&c).await;
    // A refusal before any shard was touched; ROLLBACK through the extended protocol.
    c.batch_execute("BEGIN").await.unwrap();
    let e = c.execute("SELECT string_agg(name, ',') FROM users", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("0A000"));
    c.execute("ROLLBACK", &[]).await.unwrap();
    assert_eq!(c.query_one("SELECT count(*) FROM users", &[]).await.unwrap().get::<_, i64>(0), 40);
    // A portal stays usable on its shard while the transaction runs statements elsewhere.
    let tx = c.transaction().await.unwrap();
    let stmt = tx.prepare("SELECT id FROM orders WHERE user_id = $1 ORDER BY id").await.unwrap();
    let portal = tx.bind(&stmt, &[&1i64]).await.unwrap();
    for user in 2..=9i64 {
        let name: String =
            tx.query_one("SELECT name FROM users WHERE id = $1", &[&user]).await.unwrap().get(0);
        assert_eq!(name, format!("user{user}"));
    }
    let first = tx.query_portal(&portal, 2).await.unwrap();
    let rest = tx.query_portal(&portal, 10).await.unwrap();
    let ids: Vec<i64> = first.iter().chain(&rest).map(|r| r.get(0)).collect();
    assert_eq!(ids, vec![40, 80, 120]);
    tx.commit().await.unwrap();
}

/// Savepoints in transactions over several shards: ROLLBACK TO undoes every shard's work
/// since the savepoint, including shards that joined after it; RELEASE and nesting follow
/// PostgreSQL; an error is recovered from with ROLLBACK TO; simple and extended protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn savepoints_span_shards() {
    let r = router(4);
    let cl = sharded_cluster();
    let mut c = r.connect().await.unwrap();
    setup(&c).await;
    // Eight rows go to every shard (checked below), after the savepoint and before it.
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("INSERT INTO users (id, name) VALUES (401, 'kept')").await.unwrap();
    c.batch_execute("SAVEPOINT a").await.unwrap();
    let values: Vec<String> = (402..=409).map(|id| format!("({id}, 'undone')")).collect();
    c.batch_execute(&format!("INSERT INTO users (id, name) VALUES {}", values.join(", "))).await.unwrap();
    c.batch_execute("UPDATE users SET score = -1").await.unwrap();
    assert_eq!(count(&c, "SELECT count(*) FROM users WHERE score = -1").await, 49);
    c.batch_execute("ROLLBACK TO SAVEPOINT a").await.unwrap();
    assert_eq!(count(&c, "SELECT count(*) FROM users WHERE id > 400").await, 1);
    assert_eq!(count(&c, "SELECT count(*) FROM users WHERE score = -1").await, 0);
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(count(&c, "SELECT count(*) FROM users WHERE id > 400").await, 1);
    let mut clean = 0;
    for shard in 0..4 {
        clean += usize::from(
            shard_count(cl, shard, "SELECT count(*) FROM users WHERE id BETWEEN 402 AND 409") == 0,
        );
    }
    assert_eq!(clean, 4, "nothing of the rolled-back rows stays on any shard");

    // A savepoint before any shard is touched; nesting; RELEASE keeps the work in the outer one.
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("SAVEPOINT outer_sp").await.unwrap();
    c.batch_execute("INSERT INTO users (id, name) VALUES (411, 'n'), (412, 'n')").await.unwrap();
    c.batch_execute("SAVEPOINT inner_sp").await.unwrap();
    c.batch_execute("INSERT INTO users (id, name) VALUES (413, 'n'), (414, 'n'), (415, 'n')").await.unwrap();
    c.batch_execute("RELEASE SAVEPOINT inner_sp").await.unwrap();
    let e = c.batch_execute("ROLLBACK TO SAVEPOINT inner_sp").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("3B001"), "{e}");
    let e = c.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("25P02"), "{e}");
    c.batch_execute("ROLLBACK TO SAVEPOINT outer_sp").await.unwrap();
    assert_eq!(count(&c, "SELECT count(*) FROM users WHERE id BETWEEN 411 AND 415").await, 0);
    c.batch_execute("INSERT INTO users (id, name) VALUES (416, 'n'), (417, 'n')").await.unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(count(&c, "SELECT count(*) FROM users WHERE id BETWEEN 411 AND 417").await, 2);

    // An error on one shard, recovered from with ROLLBACK TO; the transaction goes on.
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("INSERT INTO users (id, name) VALUES (421, 'e'), (422, 'e'), (423, 'e')").await.unwrap();
    c.batch_execute("SAVEPOINT before_dup").await.unwrap();
    let e = c.batch_execute("INSERT INTO users (id, name) VALUES (424, 'e'), (1, 'dup')").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("23505"), "{e}");
    let e = c.batch_execute("SELECT count(*) FROM users").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("25P02"), "{e}");
    c.batch_execute("ROLLBACK TO SAVEPOINT before_dup").await.unwrap();
    c.batch_execute("INSERT INTO users (id, name) VALUES (425, 'e')").await.unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(count(&c, "SELECT count(*) FROM users WHERE name = 'e'").await, 4);
    assert_eq!(count(&c, "SELECT count(*) FROM users WHERE id = 1 AND name = 'user1'").await, 1);

    // A savepoint inside a query string that runs on one shard is kept for later shards.
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("SAVEPOINT m; INSERT INTO users (id, name) VALUES (431, 'm')").await.unwrap();
    c.batch_execute("INSERT INTO users (id, name) VALUES (432, 'm'), (433, 'm'), (434, 'm'), (435, 'm')")
        .await
        .unwrap();
    c.batch_execute("ROLLBACK TO m").await.unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(count(&c, "SELECT count(*) FROM users WHERE name = 'm'").await, 0);

    // The extended protocol, and tokio-postgres nested transactions (savepoints).
    let mut tx = c.transaction().await.unwrap();
    tx.execute("SAVEPOINT x", &[]).await.unwrap();
    for id in 441..=446i64 {
        tx.execute("INSERT INTO users (id, name) VALUES ($1, 'x')", &[&id]).await.unwrap();
    }
    tx.execute("ROLLBACK TO SAVEPOINT x", &[]).await.unwrap();
    tx.execute("INSERT INTO users (id, name) VALUES ($1, 'x')", &[&447i64]).await.unwrap();
    {
        let mut nested = tx.transaction().await.unwrap();
        for id in 451..=456i64 {
            nested.execute("INSERT INTO users (id, name) VALUES ($1, 'x')", &[&id]).await.unwrap();
        }
        let deeper = nested.transaction().await.unwrap();
        deeper.execute("INSERT INTO users (id, name) VALUES ($1, 'x')", &[&457i64]).await.unwrap();
        deeper.rollback().await.unwrap();
        nested.commit().await.unwrap();
    }
    let n: i64 = tx.query_one("SELECT count(*) FROM users WHERE name = 'x'", &[]).await.unwrap().get(0);
    assert_eq!(n, 7);
    tx.commit().await.unwrap();
    let ids: Vec<i64> = c
        .query("SELECT id FROM users WHERE name = 'x' ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![447, 451, 452, 453, 454, 455, 456]);

    // Outside a block: PostgreSQL's own error.
    let e = c.batch_execute("SAVEPOINT lone").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("25P01"), "{e}");
}

/// Runs psql against the router with these commands (each `-c`), in one session.
fn psql_router(r: &Router, commands: &[&str]) -> (bool, String) {
    let info = r.conninfo("");
    let mut args = vec!["-X", "-At", "-v", "ON_ERROR_STOP=1", info.as_str()];
    for c in commands {
        args.push("-c");
        args.push(c);
    }
    run_tool("psql", &args)
}

/// A client in LATIN1: text the planner must read is refused with 22021 (it reads UTF-8), and
/// the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_text_for_a_sharded_table_is_22021_and_the_session_goes_on() {
    let r = router(4);
    let c = r.connect().await.unwrap();
    setup(&c).await;
    let path = std::env::temp_dir().join(format!("pgr-latin1-{}.sql", std::process::id()));
    std::fs::write(
        &path,
        b"\\set VERBOSITY verbose\nselect count(*) from users where name = 'caf\xe9';\nselect count(*) from users where id = 7;\n",
    )
    .unwrap();
    let out = std::process::Command::new("psql")
        .env("PGCLIENTENCODING", "LATIN1")
        .args(["-X", "-At", &r.conninfo(""), "-f", &path.display().to_string()])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(stderr.contains("22021") && stderr.contains("not valid UTF-8"), "{stderr}");
    assert_eq!(stdout.trim(), "1", "the next statement ran on the same session: {stdout} {stderr}");
}

/// COPY FROM STDIN into a sharded table (psql's `\copy`): every row lands on the shard of its
/// key, in text (no column list: the key's position comes from the catalog), CSV (header,
/// quotes, embedded newlines) and binary; a bad row anywhere fails the whole COPY; inside a
/// transaction the rows follow it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_into_a_sharded_table_sends_each_row_to_its_shard() {
    let r = router(4);
    let cl = sharded_cluster();
    let c = r.connect().await.unwrap();
    setup(&c).await;
    let dir = std::env::temp_dir().join(format!("pgr-copy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, data: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        p.display().to_string()
    };
    // Text, table column order (id, user_id, amount, qty).
    let text: String = (1001..=1500).map(|id| format!("{id}\t{}\t{id}.50\t\\N\n", id % 40 + 1)).collect();
    let path = file("orders.txt", text.as_bytes());
    let (ok, out) = psql_router(&r, &[&format!("\\copy orders FROM '{path}'")]);
    assert!(ok && out.contains("COPY 500"), "{out}");
    // CSV with a header, a column list in another order, quoted fields over several lines.
    let mut csv = String::from("user_id,id,amount,qty\n");
    for id in 1501..=1800 {
        csv.push_str(&format!("\"{}\",{id},{id}.25,\"{}\"\n", id % 40 + 1, id % 7));
    }
    let path = file("orders.csv", csv.as_bytes());
    let (ok, out) = psql_router(
        &r,
        &[&format!("\\copy orders (user_id, id, amount, qty) FROM '{path}' WITH (FORMAT csv, HEADER)")],
    );
    assert!(ok && out.contains("COPY 300"), "{out}");
    // Each row is where a query routed by its key finds it.
    let mut found = 0;
    for user in 1..=40i64 {
        let n: i64 = c
            .query_one("SELECT count(*) FROM orders WHERE user_id = $1 AND id > 1000", &[&user])
            .await
            .unwrap()
            .get(0);
        found += n;
    }
    assert_eq!(found, 800);
    let mut per_shard = 0;
    for shard in 0..4 {
        let n = shard_count(cl, shard, "SELECT count(*) FROM orders WHERE id > 1000");
        assert!(n > 0, "shard {shard} got rows");
        per_shard += n;
    }
    assert_eq!(per_shard, 800);
    let qty: i64 = (1501..=1800).map(|id| id % 7).sum();
    assert_eq!(count(&c, "SELECT sum(qty) FROM orders WHERE id BETWEEN 1501 AND 1800").await, qty);

    // Binary, keyed by users.id.
    let mut bin = b"PGCOPY\n\xff\r\n\0".to_vec();
    bin.extend_from_slice(&[0; 8]);
    for id in 2001..=2050i64 {
        let name = format!("bin{id}");
        bin.extend_from_slice(&2i16.to_be_bytes());
        bin.extend_from_slice(&8i32.to_be_bytes());
        bin.extend_from_slice(&id.to_be_bytes());
        bin.extend_from_slice(&(name.len() as i32).to_be_bytes());
        bin.extend_from_slice(name.as_bytes());
    }
    bin.extend_from_slice(&(-1i16).to_be_bytes());
    let path = file("users.bin", &bin);
    let (ok, out) =
        psql_router(&r, &[&format!("\\copy users (id, name) FROM '{path}' WITH (FORMAT binary)")]);
    assert!(ok && out.contains("COPY 50"), "{out}");
    for id in [2001i64, 2025, 2050] {
        let name: String = c.query_one("SELECT name FROM users WHERE id = $1", &[&id]).await.unwrap().get(0);
        assert_eq!(name, format!("bin{id}"));
    }

    // A row a shard rejects fails the whole COPY: no shard keeps any of its rows.
    let mut bad: String = (3001..=3100).map(|id| format!("{id}\t{}\t1\t1\n", id % 40 + 1)).collect();
    bad.push_str("3101\t5\t1\tnot a number\n");
    // Enough rows after it that the shard reports the error while data is still streaming.
    bad.push_str(&(3102..=40000).map(|id| format!("{id}\t{}\t1\t1\n", id % 40 + 1)).collect::<String>());
    let path = file("bad.txt", bad.as_bytes());
    let (ok, out) = psql_router(&r, &[&format!("\\copy orders FROM '{path}'")]);
    assert!(!ok && out.contains("invalid input syntax for type integer"), "{out}");
    assert_eq!(count(&c, "SELECT count(*) FROM orders WHERE id > 3000").await, 0);
    // A row the router cannot place (NULL key) fails it too, with PostgreSQL's SQLSTATE.
    let path = file("null.txt", b"3201\t5\t1\t1\n3202\t\\N\t1\t1\n");
    let (ok, out) = psql_router(&r, &[&format!("\\copy orders FROM '{path}'")]);
    assert!(!ok && out.contains("must not be NULL"), "{out}");
    assert_eq!(count(&c, "SELECT count(*) FROM orders WHERE id > 3000").await, 0);
    // The session goes on after a failed COPY.
    let info = r.conninfo("");
    let copy_null = format!("\\copy orders FROM '{path}'");
    let (_, out) = run_tool("psql", &["-X", "-At", &info, "-c", &copy_null, "-c", "SELECT 'alive'"]);
    assert!(out.contains("must not be NULL") && out.contains("alive"), "{out}");

    // Inside a transaction: rolled back with it, or committed with it.
    let path =
        file("tx.txt", (4001..=4040).map(|id| format!("{id}\t{id}\t1\t1\n")).collect::<String>().as_bytes());
    let copy = format!("\\copy orders FROM '{path}'");
    let (ok, out) =
        psql_router(&r, &["BEGIN", &copy, "SELECT count(*) FROM orders WHERE id > 4000", "ROLLBACK"]);
    assert!(ok && out.contains("\n40\n"), "{out}");
    assert_eq!(count(&c, "SELECT count(*) FROM orders WHERE id > 4000").await, 0);
    let (ok, out) = psql_router(&r, &["BEGIN", &copy, "COMMIT"]);
    assert!(ok, "{out}");
    assert_eq!(count(&c, "SELECT count(*) FROM orders WHERE id > 4000").await, 40);

    // The extended protocol (tokio-postgres) is refused rather than sent to one shard.
    let e = c.copy_in::<_, bytes::Bytes>("COPY orders FROM STDIN").await.err().unwrap();
    assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An error the router raises itself in the middle of a transaction (here: shards whose
/// schemas disagree) aborts the transaction like any error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_error_aborts_the_transaction() {
    let r = router(4);
    let cl = sharded_cluster();
    let c = r.connect().await.unwrap();
    setup(&c).await;
    cl.psql(3, "app", "ALTER TABLE users ALTER COLUMN country TYPE varchar(10)").unwrap();
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("UPDATE users SET name = 'changed' WHERE id = 1").await.unwrap();
    let e = c.batch_execute("SELECT country FROM users ORDER BY country").await.unwrap_err();
    assert!(e.as_db_error().unwrap().message().contains("disagree"), "{e}");
    let e = c.batch_execute("SELECT name FROM users WHERE id = 1").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("25P02"), "{e}");
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(rows(&c, "SELECT name FROM users WHERE id = 1").await, vec![vec![Some("user1".into())]]);
}

/// Every chunk `Execute(portal, n)` returns, as text cells, until the portal is exhausted.
async fn portal_chunks(
    c: &mut tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    n: i32,
) -> Vec<Vec<Vec<String>>> {
    let tx = c.transaction().await.unwrap();
    let stmt = tx.prepare(sql).await.unwrap();
    let portal = tx.bind(&stmt, params).await.unwrap();
    let cell = |row: &tokio_postgres::Row, i: usize| -> String {
        if let Ok(v) = row.try_get::<_, Option<String>>(i) {
            return format!("{v:?}");
        }
        if let Ok(v) = row.try_get::<_, Option<i64>>(i) {
            return format!("{v:?}");
        }
        format!("{:?}", row.try_get::<_, Option<i32>>(i).unwrap())
    };
    let mut chunks = Vec::new();
    loop {
        let rows = tx.query_portal(&portal, n).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        let done = rows.len() < n as usize;
        chunks.push(rows.iter().map(|r| (0..r.len()).map(|i| cell(r, i)).collect()).collect());
        if done {
            break;
        }
    }
    tx.rollback().await.unwrap();
    chunks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_limited_executes_fetch_cross_shard_results_in_chunks_as_postgres_does() {
    let r = router(4);
    let mut routed = r.connect().await.unwrap();
    // The sharded cluster's fifth server is a plain PostgreSQL: the reference.
    let mut plain = pg_router_tests::connect(sharded_cluster().direct(4)).await.unwrap();
    let mut values = Vec::new();
    for i in 1..=50 {
        values.push(format!(
            "('sku{i:03}', {}, {})",
            (i * 37) % 23,
            if i % 9 == 0 { "NULL".into() } else { format!("'n{}'", i % 11) }
        ));
    }
    for c in [&routed, &plain] {
        c.batch_execute("DROP TABLE IF EXISTS products").await.unwrap();
        c.batch_execute("CREATE TABLE products (sku text PRIMARY KEY, price int NOT NULL, name text)")
            .await
            .unwrap();
        c.batch_execute(&format!("INSERT INTO products (sku, price, name) VALUES {}", values.join(", ")))
            .await
            .unwrap();
    }
    let ten = 10i32;
    let cases: [(&str, &[&(dyn tokio_postgres::types::ToSql + Sync)]); 4] = [
        ("SELECT sku, price FROM products ORDER BY price, sku", &[]),
        ("SELECT count(*), sum(price), max(name) FROM products", &[]),
        ("SELECT name, count(*) FROM products WHERE price > $1 GROUP BY name ORDER BY name DESC NULLS LAST LIMIT 7", &[&ten]),
        ("SELECT sku FROM products WHERE sku > 'sku040' ORDER BY sku", &[]),
    ];
    for (sql, params) in cases {
        for n in [1, 3, 10, 50, 51] {
            let got = portal_chunks(&mut routed, sql, params, n).await;
            let want = portal_chunks(&mut plain, sql, params, n).await;
            assert_eq!(got, want, "{sql} in chunks of {n}");
        }
    }
    // A write with a row limit runs whole at its first Execute, as in PostgreSQL (pgJDBC's
    // executeUpdate sends Execute with max_rows 1); RETURNING rows come in chunks.
    let sql = "UPDATE products SET price = price + 1 RETURNING sku";
    for n in [1, 7, 50] {
        let got = portal_chunks(&mut routed, sql, &[], n).await;
        let want = portal_chunks(&mut plain, sql, &[], n).await;
        let sizes = |c: &Vec<Vec<Vec<String>>>| c.iter().map(Vec::len).collect::<Vec<_>>();
        assert_eq!(sizes(&got), sizes(&want), "{sql} in chunks of {n}");
        let sorted = |c: Vec<Vec<Vec<String>>>| {
            let mut rows: Vec<Vec<String>> = c.into_iter().flatten().collect();
            rows.sort();
            rows
        };
        assert_eq!(sorted(got), sorted(want), "{sql} in chunks of {n}");
    }
    let tx = routed.transaction().await.unwrap();
    let stmt = tx.prepare("UPDATE products SET price = price + 100").await.unwrap();
    let portal = tx.bind(&stmt, &[]).await.unwrap();
    assert!(tx.query_portal(&portal, 1).await.unwrap().is_empty());
    let n: i64 = tx.query_one("SELECT count(*) FROM products WHERE price >= 100", &[]).await.unwrap().get(0);
    assert_eq!(n, 50, "the whole UPDATE ran at the first Execute");
    tx.rollback().await.unwrap();
    let n: i64 =
        routed.query_one("SELECT count(*) FROM products WHERE price >= 100", &[]).await.unwrap().get(0);
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_can_share_a_server_in_their_own_databases() {
    let c = sharded_cluster();
    for db in ["colo_s0", "colo_s1"] {
        c.psql(0, "postgres", &format!("CREATE DATABASE {db}")).unwrap();
    }
    let port = c.ports[0];
    let entries: String = ["colo_s0", "colo_s1"]
        .iter()
        .enumerate()
        .map(|(i, db)| {
            format!(
                "\n[[shards]]\nname = \"s{i}\"\nhost = \"127.0.0.1\"\nport = {port}\ndatabase = \"{db}\"\n"
            )
        })
        .collect();
    let r = Router::start(RouterOptions {
        cluster: Some(c),
        shards_toml: Some(entries),
        extra: commerce_routing(2),
        ..RouterOptions::default()
    });
    let client = r.connect().await.unwrap();
    setup(&client).await;
    // Each database holds its own part, nothing twice; the router sees the whole.
    let (a, b) = (
        c.psql(0, "colo_s0", "SELECT count(*) FROM users").unwrap(),
        c.psql(0, "colo_s1", "SELECT count(*) FROM users").unwrap(),
    );
    let (a, b): (i64, i64) = (a.trim().parse().unwrap(), b.trim().parse().unwrap());
    assert!(a > 0 && b > 0 && a + b == 40, "{a} + {b}");
    assert_eq!(rows(&client, "SELECT count(*) FROM users").await, vec![vec![Some("40".to_owned())]]);
    assert_eq!(rows(&client, "SELECT count(*) FROM countries").await, vec![vec![Some("3".to_owned())]]);
    for id in [1, 17, 40] {
        let got = client.query_one("SELECT name FROM users WHERE id = $1", &[&(id as i64)]).await.unwrap();
        assert_eq!(got.get::<_, String>(0), format!("user{id}"));
    }
}

/// `accounts` has a unique lookup vindex on `email` (table `account_emails` in keyspace `main`)
/// and `items` a non-unique one on `tag` (table `item_tags`, not in the VSchema: the default
/// keyspace).
fn lookup_router() -> Router {
    let mut extra = commerce_routing(4);
    extra.push_str(
        r#"
[vschema.keyspaces.main.tables.account_emails]

[vschema.keyspaces.commerce.vindexes.email_idx]
type = "lookup_unique"
params = { column_type = "text", table = "account_emails", from = "email" }
owner = "accounts"

[vschema.keyspaces.commerce.vindexes.tag_idx]
type = "lookup"
params = { column_type = "text", table = "item_tags", from = "tag" }
owner = "items"

[vschema.keyspaces.commerce.tables.accounts]
column_vindexes = [{ column = "id", vindex = "hash_id" }, { column = "email", vindex = "email_idx" }]

[vschema.keyspaces.commerce.tables.items]
column_vindexes = [{ column = "account_id", vindex = "hash_id" }, { column = "tag", vindex = "tag_idx" }]
"#,
    );
    Router::start(RouterOptions {
        cluster: Some(sharded_cluster()),
        shards: 4,
        extra,
        ..RouterOptions::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_vindexes_route_reads_and_are_kept_by_inserts() {
    let r = lookup_router();
    let cl = sharded_cluster();
    let c = r.connect().await.unwrap();
    for ddl in [
        "CREATE TABLE accounts (id bigint PRIMARY KEY, email text, name text)",
        "CREATE TABLE items (account_id bigint NOT NULL, tag text, n int)",
        "CREATE TABLE account_emails (email text PRIMARY KEY, keyspace_id bytea NOT NULL)",
        "CREATE TABLE item_tags (tag text, keyspace_id bytea, PRIMARY KEY (tag, keyspace_id))",
    ] {
        c.batch_execute(ddl).await.unwrap();
    }
    let values: Vec<String> = (1..=40).map(|i| format!("({i}, 'u{i}@x', 'user{i}')")).collect();
    c.batch_execute(&format!("INSERT INTO accounts (id, email, name) VALUES {}", values.join(", ")))
        .await
        .unwrap();
    // Extended protocol, a NULL email (no lookup row) and a parameter.
    c.execute("INSERT INTO accounts (id, email, name) VALUES ($1, $2, 'p')", &[&41i64, &"u41@x"])
        .await
        .unwrap();
    c.execute("INSERT INTO accounts (id, name) VALUES (42, 'no mail')", &[]).await.unwrap();
    assert_eq!(shard_count(cl, 0, "SELECT count(*) FROM account_emails"), 41);
    // Reads by email go where the lookup table says.
    assert_eq!(
        rows(&c, "SELECT name FROM accounts WHERE email = 'u7@x'").await,
        vec![vec![Some("user7".into())]]
    );
    let route = rows(&c, "SHOW ROUTE FOR SELECT name FROM accounts WHERE email = 'u7@x'").await;
    assert!(format!("{route:?}").contains("lookup in=main"), "{route:?}");
    let n: i64 = c.query_one("SELECT id FROM accounts WHERE email = $1", &[&"u41@x"]).await.unwrap().get(0);
    assert_eq!(n, 41);
    assert_eq!(
        rows(&c, "SELECT id FROM accounts WHERE email IN ('u3@x', 'u1@x', 'nobody@x') ORDER BY id").await,
        vec![vec![Some("1".into())], vec![Some("3".into())]]
    );
    assert!(rows(&c, "SELECT * FROM accounts WHERE email = 'nobody@x'").await.is_empty());
    assert_eq!(
        rows(&c, "SELECT count(*) FROM accounts WHERE email = 'nobody@x'").await,
        vec![vec![Some("0".into())]]
    );
    // The route follows the lookup row: pointed at a keyspace id of another shard (the four
    // shards own -40, 40-80, 80-c0, c0-), the row is not found.
    let home_shard =
        (0..4).find(|&s| shard_count(cl, s, "SELECT count(*) FROM accounts WHERE id = 7") == 1).unwrap();
    let other = ["40", "80", "c0", "00"][home_shard];
    cl.psql(
        0,
        "app",
        &format!(
            "UPDATE account_emails SET keyspace_id = decode('{other}00000000000000', 'hex') WHERE email = 'u7@x'"
        ),
    )
    .unwrap();
    let misrouted = rows(&c, "SELECT name FROM accounts WHERE email = 'u7@x'").await;
    cl.psql(0, "app", "DELETE FROM account_emails WHERE email = 'u7@x'").unwrap();
    c.batch_execute("DELETE FROM accounts WHERE id = 7").await.unwrap();
    c.batch_execute("INSERT INTO accounts (id, email, name) VALUES (7, 'u7@x', 'user7')").await.unwrap();
    assert!(misrouted.is_empty(), "routed by the lookup row away from shard s{home_shard}: {misrouted:?}");
    assert_eq!(
        rows(&c, "SELECT name FROM accounts WHERE email = 'u7@x'").await,
        vec![vec![Some("user7".into())]]
    );
    // A value held by a live row is a duplicate; nothing is inserted.
    let e = c.batch_execute("INSERT INTO accounts (id, email) VALUES (1000, 'u9@x')").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("23505"), "{e}");
    assert_eq!(rows(&c, "SELECT count(*) FROM accounts WHERE id = 1000").await, vec![vec![Some("0".into())]]);
    let e =
        c.batch_execute("INSERT INTO accounts (id, email) VALUES (1003, 'twice@x'), (1004, 'twice@x')").await;
    assert_eq!(sqlstate(&e.unwrap_err()).as_deref(), Some("23505"));
    // A deleted row's lookup row is stale: the value can be used again, by another key.
    c.batch_execute("DELETE FROM accounts WHERE email = 'u8@x'").await.unwrap();
    c.batch_execute("INSERT INTO accounts (id, email, name) VALUES (1001, 'u8@x', 'again')").await.unwrap();
    assert_eq!(
        rows(&c, "SELECT id FROM accounts WHERE email = 'u8@x'").await,
        vec![vec![Some("1001".into())]]
    );
    // A row the lookup column cannot be computed for is refused.
    let e =
        c.batch_execute("INSERT INTO accounts (id, email) VALUES (1002, lower('X@X'))").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{e}");

    // In a transaction: its own rows are found by email; a concurrent insert of the same value
    // waits for it and then is a duplicate; ROLLBACK removes the lookup rows.
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("INSERT INTO accounts (id, email, name) VALUES (2000, 'tx@x', 'tx')").await.unwrap();
    assert_eq!(
        rows(&c, "SELECT id FROM accounts WHERE email = 'tx@x'").await,
        vec![vec![Some("2000".into())]]
    );
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(shard_count(cl, 0, "SELECT count(*) FROM account_emails WHERE email = 'tx@x'"), 0);
    // Savepoints take the lookup rows along: ROLLBACK TO drops those added after the
    // savepoint, whether the lookup transaction was opened before it or after.
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("SAVEPOINT first").await.unwrap();
    c.batch_execute("INSERT INTO accounts (id, email, name) VALUES (2010, 'undone1@x', 'u')").await.unwrap();
    c.batch_execute("ROLLBACK TO SAVEPOINT first").await.unwrap();
    c.batch_execute("INSERT INTO accounts (id, email, name) VALUES (2011, 'kept@x', 'k')").await.unwrap();
    c.batch_execute("SAVEPOINT second").await.unwrap();
    c.batch_execute("INSERT INTO accounts (id, email, name) VALUES (2012, 'undone2@x', 'u')").await.unwrap();
    assert_eq!(
        rows(&c, "SELECT id FROM accounts WHERE email = 'undone2@x'").await,
        vec![vec![Some("2012".into())]]
    );
    c.batch_execute("ROLLBACK TO SAVEPOINT second").await.unwrap();
    assert!(rows(&c, "SELECT id FROM accounts WHERE email = 'undone2@x'").await.is_empty());
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        shard_count(cl, 0, "SELECT count(*) FROM account_emails WHERE email IN ('undone1@x', 'undone2@x')"),
        0
    );
    assert_eq!(shard_count(cl, 0, "SELECT count(*) FROM account_emails WHERE email = 'kept@x'"), 1);
    assert_eq!(
        rows(&c, "SELECT id FROM accounts WHERE email = 'kept@x'").await,
        vec![vec![Some("2011".into())]]
    );
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("INSERT INTO accounts (id, email, name) VALUES (2001, 'race@x', 'first')").await.unwrap();
    let c2 = r.connect().await.unwrap();
    let second = tokio::spawn(async move {
        c2.batch_execute("INSERT INTO accounts (id, email, name) VALUES (2002, 'race@x', 'second')").await
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "the second insert waits for the first transaction");
    c.batch_execute("COMMIT").await.unwrap();
    let e = second.await.unwrap().unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("23505"), "{e}");
    assert_eq!(
        rows(&c, "SELECT id FROM accounts WHERE email = 'race@x'").await,
        vec![vec![Some("2001".into())]]
    );
    assert_eq!(rows(&c, "SELECT count(*) FROM accounts WHERE id = 2002").await, vec![vec![Some("0".into())]]);

    // Non-unique: a tag on several shards is found on all of them, merged.
    let values: Vec<String> = (1..=60).map(|i| format!("({}, 't{}', {i})", i % 40 + 1, i % 3)).collect();
    c.batch_execute(&format!("INSERT INTO items (account_id, tag, n) VALUES {}", values.join(", ")))
        .await
        .unwrap();
    let tx = {
        let mut c3 = r.connect().await.unwrap();
        let tx = c3.transaction().await.unwrap();
        tx.execute("INSERT INTO items (account_id, tag, n) VALUES ($1, $2, 1000)", &[&5i64, &"t9"])
            .await
            .unwrap();
        let n: i64 = tx.query_one("SELECT sum(n) FROM items WHERE tag = $1", &[&"t9"]).await.unwrap().get(0);
        tx.commit().await.unwrap();
        n
    };
    assert_eq!(tx, 1000);
    assert_eq!(
        rows(&c, "SELECT tag, count(*), sum(n) FROM items WHERE tag IN ('t0', 't2', 't9') GROUP BY tag ORDER BY tag")
            .await,
        vec![
            vec![Some("t0".into()), Some("20".into()), Some("630".into())],
            vec![Some("t2".into()), Some("20".into()), Some("610".into())],
            vec![Some("t9".into()), Some("1".into()), Some("1000".into())],
        ]
    );
    // One lookup row per (tag, keyspace id): t1 is on 20 accounts.
    assert_eq!(shard_count(cl, 0, "SELECT count(*) FROM item_tags WHERE tag = 't1'"), 20);
}
