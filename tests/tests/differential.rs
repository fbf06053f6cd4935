//! Differential test: the same seeded data in pg-router over four shards and in one plain
//! PostgreSQL; every query must give the same answer through both, or be refused with 0A000
//! (and then be one of the shapes the README lists as unsupported).
#![allow(clippy::unwrap_used)]

use pg_router_tests::{commerce_routing, connect, sharded_cluster, sqlstate, Router, RouterOptions};
use tokio_postgres::{Client, SimpleQueryMessage};

const USERS: i64 = 10_000;
const ORDERS: i64 = 30_000;

const SCHEMA: &[&str] = &[
    "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, email text, country text,
                         score numeric(10,2), age int, active boolean, created timestamptz)",
    "CREATE TABLE orders (id bigint NOT NULL, user_id bigint NOT NULL, amount numeric(12,2), qty int,
                          status text, placed date, PRIMARY KEY (user_id, id))",
    "CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL, region text)",
];

/// A small deterministic generator (the data must be identical on both sides).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const COUNTRIES: &[(&str, &str, &str)] = &[
    ("de", "Germany", "eu"),
    ("fr", "France", "eu"),
    ("it", "Italy", "eu"),
    ("us", "United States", "na"),
    ("ca", "Canada", "na"),
    ("br", "Brazil", "sa"),
    ("jp", "Japan", "as"),
    ("in", "India", "as"),
];
const STATUSES: &[&str] = &["new", "paid", "shipped", "cancelled"];

fn data_statements() -> Vec<String> {
    let mut rng = Lcg(42);
    let mut out = Vec::new();
    let countries: Vec<String> = COUNTRIES.iter().map(|(c, n, r)| format!("('{c}', '{n}', '{r}')")).collect();
    out.push(format!("INSERT INTO countries (code, name, region) VALUES {}", countries.join(", ")));
    let mut batch = Vec::new();
    for id in 1..=USERS {
        let country = if rng.below(20) == 0 {
            "NULL".to_owned()
        } else {
            format!("'{}'", COUNTRIES[rng.below(8) as usize].0)
        };
        let score = if rng.below(25) == 0 {
            "NULL".to_owned()
        } else {
            format!("{}.{:02}", rng.below(1000), rng.below(100))
        };
        batch.push(format!(
            "({id}, 'user{:05}', 'u{id}@example.com', {country}, {score}, {}, {}, \
             timestamptz '2024-01-01 00:00:00+00' + interval '{} minutes')",
            rng.below(USERS as u64),
            18 + rng.below(60),
            rng.below(3) != 0,
            rng.below(500_000),
        ));
        if batch.len() == 1000 {
            out.push(format!(
                "INSERT INTO users (id, name, email, country, score, age, active, created) VALUES {}",
                batch.join(", ")
            ));
            batch.clear();
        }
    }
    for id in 1..=ORDERS {
        batch.push(format!(
            "({id}, {}, {}.{:02}, {}, '{}', date '2024-01-01' + {})",
            1 + rng.below(USERS as u64),
            rng.below(500),
            rng.below(100),
            1 + rng.below(9),
            STATUSES[rng.below(4) as usize],
            rng.below(365),
        ));
        if batch.len() == 1000 {
            out.push(format!(
                "INSERT INTO orders (id, user_id, amount, qty, status, placed) VALUES {}",
                batch.join(", ")
            ));
            batch.clear();
        }
    }
    out
}

/// A query and how to compare its rows.
struct Case {
    sql: String,
    /// The ORDER BY makes the row order deterministic: compare in order.
    ordered: bool,
}

fn case(sql: impl Into<String>, ordered: bool) -> Case {
    Case { sql: sql.into(), ordered }
}

fn hand_written() -> Vec<Case> {
    let o = |s: &str| case(s, true);
    let u = |s: &str| case(s, false);
    vec![
        // Point lookups and IN-lists.
        o("SELECT * FROM users WHERE id = 1"),
        o("SELECT name, score FROM users WHERE id = 4242"),
        o("SELECT * FROM users WHERE 777 = id"),
        o("SELECT id, email FROM users WHERE id IN (1, 2, 3, 500, 9999) ORDER BY id"),
        u("SELECT id, email FROM users WHERE id IN (10, 20, 30, 40)"),
        o("SELECT * FROM users WHERE id = -5"),
        o("SELECT * FROM orders WHERE user_id = 17 ORDER BY id"),
        o("SELECT count(*), sum(amount) FROM orders WHERE user_id = 17"),
        o("SELECT * FROM orders WHERE user_id IN (5, 6, 7) ORDER BY user_id, id"),
        // Ranges and full scans.
        u("SELECT id FROM users WHERE id BETWEEN 100 AND 130"),
        o("SELECT id, age FROM users WHERE age > 70 ORDER BY id"),
        u("SELECT id FROM users WHERE country IS NULL"),
        o("SELECT id FROM users WHERE name LIKE 'user0001%' ORDER BY id"),
        u("SELECT * FROM countries"),
        o("SELECT * FROM countries ORDER BY code"),
        // Aggregates.
        o("SELECT count(*) FROM users"),
        o("SELECT count(*) FROM orders"),
        o("SELECT count(country), count(score), count(*) FROM users"),
        o("SELECT sum(amount), sum(qty), min(amount), max(amount) FROM orders"),
        o("SELECT avg(amount) FROM orders"),
        o("SELECT avg(qty) FROM orders"),
        o("SELECT avg(score), avg(age) FROM users"),
        o("SELECT min(name), max(name), min(created), max(created) FROM users"),
        o("SELECT min(placed), max(placed) FROM orders"),
        o("SELECT count(*) FROM users WHERE id < 0"),
        o("SELECT sum(amount), avg(amount), max(qty) FROM orders WHERE qty > 100"),
        o("SELECT bool_and(active), bool_or(active) FROM users"),
        o("SELECT sum(amount * qty) FROM orders"),
        o("SELECT sum(qty)::numeric / count(*) AS ratio_inputs FROM orders WHERE user_id = 3"),
        o("SELECT count(*) AS n, sum(age) AS total_age FROM users WHERE active"),
        // GROUP BY / HAVING.
        o("SELECT country, count(*) FROM users GROUP BY country ORDER BY country"),
        u("SELECT country, count(*) FROM users GROUP BY country"),
        o("SELECT country, count(*), sum(score), avg(score), min(age), max(age) FROM users GROUP BY country ORDER BY country NULLS FIRST"),
        o("SELECT status, count(*), sum(amount) FROM orders GROUP BY status ORDER BY status"),
        o("SELECT status, sum(qty) FROM orders GROUP BY 1 ORDER BY 1 DESC"),
        o("SELECT country, active, count(*) FROM users GROUP BY country, active ORDER BY country, active"),
        o("SELECT country, count(*) FROM users GROUP BY country HAVING count(*) > 1150 ORDER BY country"),
        o("SELECT status, avg(amount) FROM orders GROUP BY status HAVING sum(qty) > 0 ORDER BY status"),
        o("SELECT country, count(*) AS n FROM users GROUP BY country ORDER BY n DESC, country LIMIT 3"),
        o("SELECT qty, count(*) FROM orders GROUP BY qty ORDER BY count(*) DESC, qty LIMIT 4"),
        o("SELECT age, count(*) FROM users WHERE age < 25 GROUP BY age ORDER BY age"),
        o("SELECT placed, count(*) FROM orders GROUP BY placed ORDER BY placed LIMIT 10"),
        o("SELECT user_id, count(*), sum(amount) FROM orders GROUP BY user_id ORDER BY user_id LIMIT 20"),
        o("SELECT user_id, count(*) FROM orders GROUP BY user_id HAVING count(*) >= 9 ORDER BY user_id"),
        // DISTINCT and COUNT(DISTINCT).
        o("SELECT DISTINCT country FROM users ORDER BY country"),
        u("SELECT DISTINCT status FROM orders"),
        o("SELECT DISTINCT qty, status FROM orders ORDER BY qty, status"),
        o("SELECT count(DISTINCT country) FROM users"),
        o("SELECT count(DISTINCT user_id) FROM orders"),
        o("SELECT status, count(DISTINCT user_id) FROM orders GROUP BY status ORDER BY status"),
        o("SELECT count(DISTINCT qty), count(*) FROM orders"),
        // ORDER BY / LIMIT / OFFSET.
        o("SELECT id, score FROM users ORDER BY score DESC NULLS LAST, id LIMIT 10"),
        o("SELECT id, score FROM users ORDER BY score NULLS FIRST, id LIMIT 10"),
        o("SELECT id, name FROM users ORDER BY name, id LIMIT 5 OFFSET 100"),
        o("SELECT id FROM users ORDER BY id DESC LIMIT 7"),
        o("SELECT id, created FROM users ORDER BY created DESC, id LIMIT 15"),
        o("SELECT id, user_id, amount FROM orders ORDER BY amount DESC, id LIMIT 25"),
        o("SELECT id FROM orders ORDER BY placed, id LIMIT 10 OFFSET 20"),
        o("SELECT id, age FROM users ORDER BY age DESC, id DESC LIMIT 12"),
        o("SELECT * FROM users ORDER BY id LIMIT 5"),
        o("SELECT * FROM orders ORDER BY user_id, id LIMIT 5 OFFSET 3"),
        o("SELECT id, name FROM users ORDER BY 2, 1 LIMIT 4"),
        o("SELECT id, score * 2 AS doubled FROM users WHERE score IS NOT NULL ORDER BY doubled DESC, id LIMIT 5"),
        o("SELECT id FROM users ORDER BY id FETCH FIRST 3 ROWS ONLY"),
        o("SELECT id FROM users WHERE active ORDER BY age, id LIMIT 10"),
        // Joins.
        o("SELECT u.id, o.id, o.amount FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id = 42 ORDER BY o.id"),
        o("SELECT count(*) FROM users u JOIN orders o ON o.user_id = u.id"),
        o("SELECT u.country, count(*) FROM users u JOIN orders o ON o.user_id = u.id GROUP BY u.country ORDER BY u.country"),
        o("SELECT u.id, c.name FROM users u JOIN countries c ON c.code = u.country WHERE u.id = 3"),
        o("SELECT c.region, count(*) FROM users u JOIN countries c ON c.code = u.country GROUP BY c.region ORDER BY c.region"),
        o("SELECT u.id, count(o.id) FROM users u LEFT JOIN orders o ON o.user_id = u.id WHERE u.id IN (1, 2, 3) GROUP BY u.id ORDER BY u.id"),
        o("SELECT o.status, c.region, sum(o.amount) FROM orders o JOIN users u ON u.id = o.user_id JOIN countries c ON c.code = u.country GROUP BY o.status, c.region ORDER BY 1, 2"),
        // Subqueries, CTEs, window functions on one shard (routed by key).
        o("SELECT * FROM users WHERE id = 10 AND age > (SELECT min(age) FROM users WHERE id = 10) - 1"),
        o("WITH mine AS (SELECT * FROM orders WHERE user_id = 99) SELECT count(*), sum(amount) FROM mine"),
        o("SELECT id, amount, rank() OVER (ORDER BY amount DESC, id) FROM orders WHERE user_id = 123 ORDER BY id"),
        o("SELECT id FROM users WHERE id = 5 UNION ALL SELECT id FROM users WHERE id = 5"),
        o("SELECT u.id FROM users u WHERE u.country IN (SELECT code FROM countries WHERE region = 'eu') ORDER BY u.id LIMIT 10"),
        // No tables.
        o("SELECT 1 + 1, 'x'::text"),
        o("SELECT upper('abc'), length('hello')"),
    ]
}

/// Shapes the router refuses (0A000); each is listed in the README's "SQL support" table.
fn refused() -> Vec<&'static str> {
    vec![
        "SELECT id, rank() OVER (ORDER BY score) FROM users",
        "SELECT * FROM users WHERE id IN (SELECT user_id FROM orders WHERE amount > 490)",
        "WITH big AS (SELECT user_id FROM orders WHERE amount > 400) SELECT count(*) FROM big",
        "SELECT string_agg(name, ',') FROM users",
        "SELECT sum(amount) / count(*) FROM orders",
        "SELECT id FROM users UNION SELECT user_id FROM orders",
        "SELECT id FROM users ORDER BY id LIMIT $1",
        "UPDATE users SET id = id + 1 WHERE id = 1",
        "INSERT INTO orders (id, amount) VALUES (1, 1)",
        "SELECT * FROM users u JOIN orders o ON o.id = u.id",
    ]
}

fn generated() -> Vec<Case> {
    let mut rng = Lcg(7);
    let mut out = Vec::new();
    for _ in 0..40 {
        out.push(case(format!("SELECT * FROM users WHERE id = {}", 1 + rng.below(USERS as u64 + 5)), true));
    }
    for _ in 0..20 {
        let ids: Vec<String> =
            (0..1 + rng.below(8)).map(|_| (1 + rng.below(USERS as u64)).to_string()).collect();
        out.push(case(
            format!("SELECT id, name, score FROM users WHERE id IN ({}) ORDER BY id", ids.join(", ")),
            true,
        ));
    }
    for _ in 0..20 {
        let uid = 1 + rng.below(USERS as u64);
        out.push(case(
            format!("SELECT count(*), sum(amount), avg(qty), min(placed), max(status) FROM orders WHERE user_id = {uid}"),
            true,
        ));
    }
    let aggs = [
        "count(*)",
        "sum(amount)",
        "avg(amount)",
        "min(amount)",
        "max(qty)",
        "count(DISTINCT status)",
        "avg(qty)",
    ];
    let keys = ["status", "qty", "placed"];
    for _ in 0..30 {
        let a = aggs[rng.below(aggs.len() as u64) as usize];
        let k = keys[rng.below(keys.len() as u64) as usize];
        let lo = rng.below(400);
        out.push(case(
            format!("SELECT {k}, {a} FROM orders WHERE amount >= {lo} GROUP BY {k} ORDER BY {k}"),
            true,
        ));
    }
    for _ in 0..25 {
        let limit = 1 + rng.below(30);
        let offset = rng.below(50);
        let dir = if rng.below(2) == 0 { "ASC" } else { "DESC" };
        let col = ["score", "age", "name", "created"][rng.below(4) as usize];
        out.push(case(
            format!("SELECT id, {col} FROM users ORDER BY {col} {dir} NULLS LAST, id {dir} LIMIT {limit} OFFSET {offset}"),
            true,
        ));
    }
    for _ in 0..20 {
        let age = 18 + rng.below(60);
        let c = COUNTRIES[rng.below(8) as usize].0;
        out.push(case(
            format!(
                "SELECT count(*), avg(score), sum(age) FROM users WHERE age >= {age} AND country = '{c}'"
            ),
            true,
        ));
    }
    for _ in 0..15 {
        let n = 900 + rng.below(400);
        out.push(case(
            format!(
                "SELECT country, count(*) FROM users GROUP BY country HAVING count(*) > {n} ORDER BY country"
            ),
            true,
        ));
    }
    out
}

async fn text_rows(c: &Client, sql: &str) -> Result<Vec<Vec<Option<String>>>, tokio_postgres::Error> {
    let msgs = c.simple_query(sql).await?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect()),
            _ => None,
        })
        .collect())
}

async fn load(router: &Client, plain: &Client) {
    for stmt in SCHEMA {
        router.batch_execute(stmt).await.unwrap_or_else(|e| panic!("{stmt}: {e}"));
        plain.batch_execute(stmt).await.unwrap();
    }
    for stmt in data_statements() {
        router.batch_execute(&stmt).await.unwrap_or_else(|e| panic!("router load: {e}"));
        plain.batch_execute(&stmt).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_answers_as_one_postgres_over_4_shards() {
    same_answers_as_one_postgres(4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_answers_as_one_postgres_over_2_shards() {
    same_answers_as_one_postgres(2).await;
}

async fn same_answers_as_one_postgres(shards: usize) {
    let cluster = sharded_cluster();
    let r = Router::start(RouterOptions {
        cluster: Some(cluster),
        shards,
        extra: commerce_routing(shards),
        ..RouterOptions::default()
    });
    let router = r.connect().await.unwrap();
    let plain = connect(cluster.direct(4)).await.unwrap();
    load(&router, &plain).await;

    let mut cases = hand_written();
    cases.extend(generated());
    let mut mismatches = Vec::new();
    for c in &cases {
        let want = text_rows(&plain, &c.sql).await.unwrap_or_else(|e| panic!("plain: {}: {e}", c.sql));
        let got = match text_rows(&router, &c.sql).await {
            Ok(g) => g,
            Err(e) => {
                mismatches.push(format!("{}\n  router error: {e} ({:?})", c.sql, sqlstate(&e)));
                continue;
            }
        };
        let (mut want, mut got) = (want, got);
        if !c.ordered {
            want.sort();
            got.sort();
        }
        if want != got {
            let n = want.len().min(3);
            mismatches.push(format!(
                "{}\n  want {} rows {:?}\n  got  {} rows {:?}",
                c.sql,
                want.len(),
                &want[..n],
                got.len(),
                &got[..got.len().min(3)]
            ));
        }
    }
    // The extended protocol with parameters gives the same answers too.
    for id in [1i64, 77, 5000, 9999] {
        let q = "SELECT id, name, age FROM users WHERE id = $1";
        let a: Vec<(i64, String, i32)> =
            plain.query(q, &[&id]).await.unwrap().iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
        let b: Vec<(i64, String, i32)> =
            router.query(q, &[&id]).await.unwrap().iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
        if a != b {
            mismatches.push(format!("{q} [{id}]: {a:?} vs {b:?}"));
        }
    }
    let q = "SELECT id, age FROM users WHERE age BETWEEN $1 AND $2 ORDER BY age DESC, id LIMIT 20";
    let a: Vec<(i64, i32)> =
        plain.query(q, &[&30i32, &40i32]).await.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
    let b: Vec<(i64, i32)> =
        router.query(q, &[&30i32, &40i32]).await.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
    if a != b {
        mismatches.push(format!("{q}: {a:?} vs {b:?}"));
    }
    for sql in refused() {
        match router.simple_query(sql).await {
            Err(e) if sqlstate(&e).as_deref() == Some("0A000") => {}
            Err(e) => mismatches.push(format!("{sql}\n  expected 0A000, got {e}")),
            Ok(_) => mismatches.push(format!("{sql}\n  expected 0A000, but it ran")),
        }
    }
    // Writes: multi-row INSERT ... RETURNING, UPDATE, DELETE, then the tables must match.
    let writes = [
        "INSERT INTO users (id, name, age) VALUES (20001, 'n1', 30), (20002, 'n2', 31), (20003, 'n3', 32), (20004, 'n4', 33) RETURNING id, name",
        "INSERT INTO orders (id, user_id, amount, qty, status) VALUES (90001, 20001, 1.50, 1, 'new'), (90002, 20003, 2.50, 2, 'new') RETURNING *",
        "UPDATE users SET age = age + 1 WHERE id = 20002 RETURNING id, age",
        "UPDATE orders SET status = 'archived' WHERE placed < date '2024-01-15'",
        "DELETE FROM orders WHERE qty = 9 AND amount < 50",
        "DELETE FROM users WHERE id = 20004 RETURNING name",
        "UPDATE countries SET name = name || '!' WHERE region = 'eu'",
    ];
    for sql in writes {
        let want = text_rows(&plain, sql).await.unwrap();
        match text_rows(&router, sql).await {
            Ok(got) if got == want => {}
            Ok(got) => mismatches.push(format!("{sql}\n  want {want:?}\n  got {got:?}")),
            Err(e) => mismatches.push(format!("{sql}\n  router error: {e}")),
        }
    }
    for sql in [
        "SELECT * FROM users ORDER BY id",
        "SELECT * FROM orders ORDER BY user_id, id",
        "SELECT * FROM countries ORDER BY code",
    ] {
        if text_rows(&plain, sql).await.unwrap() != text_rows(&router, sql).await.unwrap() {
            mismatches.push(format!("after writes: {sql} differs"));
        }
    }
    let total = cases.len() + 5 + refused().len() + 7 + 3;
    assert!(total >= 200, "only {total} queries");
    assert!(
        mismatches.is_empty(),
        "{} of {total} queries differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
