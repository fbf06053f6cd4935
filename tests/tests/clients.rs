//! Real drivers other than libpq/tokio-postgres through pg-router in transaction pooling mode:
//! psycopg 3, asyncpg, node-postgres, pgJDBC and sysbench.
//!
//! Each test starts a router and runs a client program from `tests/clients/` that performs the
//! checks itself and exits non-zero with `CHECK FAILED: ...` on the first one that does not
//! hold; the program's output is printed when it fails. The programs read the connection from
//! libpq's environment variables (`PGHOST`, `PGPORT`, ...; see `tests/clients/python/common.py`).
//! The toolchains are installed by `bash tests/clients/setup.sh` (CI runs it); a test whose
//! toolchain is missing fails and says so.
#![allow(clippy::unwrap_used)]

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pg_router_tests::*;

const SETUP: &str = "run bash tests/clients/setup.sh";
const JDBC_JAR: &str = "/usr/share/java/postgresql.jar";
/// A client program that runs longer than this is killed and its test fails.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn clients_dir() -> PathBuf {
    root().join("tests/clients")
}

/// Where setup.sh puts the Python venv and where the Java classes are compiled.
fn tools_dir() -> PathBuf {
    root().join("target/clients")
}

fn require(path: &Path, what: &str) {
    assert!(path.exists(), "{what} not found at {}: {SETUP}", path.display());
}

fn require_command(program: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(found, "`{program}` is not installed: {SETUP}");
}

/// How a client reaches the router.
struct Target<'a> {
    router: &'a Router,
    tls: bool,
}

/// Runs a client program with the router's connection in its environment and fails the test,
/// showing the program's output, unless it exits with success within [`CLIENT_TIMEOUT`].
fn run_client(name: &str, mut cmd: Command, target: Target) {
    cmd.env("PGHOST", "127.0.0.1")
        .env("PGPORT", target.router.port.to_string())
        .env("PGUSER", APP_USER)
        .env("PGPASSWORD", APP_PASSWORD)
        .env("PGDATABASE", DATABASE)
        .env("PGMD5USER", MD5_USER)
        .env("PGMD5PASSWORD", MD5_PASSWORD)
        .env("PGSSLMODE", if target.tls { "require" } else { "disable" })
        .env_remove("PGSSLROOTCERT")
        .env_remove("PGOPTIONS")
        .env_remove("PGSERVICE");
    if target.tls {
        // The self-signed certificate is its own CA.
        cmd.env("PGSSLROOTCERT", &test_cert().0);
    }
    let log = std::env::temp_dir().join(format!("pgr-client-{name}-{}.log", std::process::id()));
    let file = std::fs::File::create(&log).unwrap();
    cmd.stdin(Stdio::null()).stdout(file.try_clone().unwrap()).stderr(file);
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{name}: cannot start {cmd:?}: {e} ({SETUP})"));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > CLIENT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    match status {
        // Shown with --no-capture: the steps the client went through.
        Some(s) if s.success() => println!("{name} output:\n{out}"),
        Some(s) => panic!("{name} failed ({s}) after {:.1?}:\n{out}", started.elapsed()),
        None => panic!("{name} did not finish within {CLIENT_TIMEOUT:?}:\n{out}"),
    }
}

fn python(script: &str, mode: &str) -> Command {
    let py = tools_dir().join("venv/bin/python");
    require(&py, "the Python venv");
    let mut c = Command::new(py);
    c.env("PYTHONDONTWRITEBYTECODE", "1").arg(clients_dir().join("python").join(script)).arg(mode);
    c
}

fn node(mode: &str) -> Command {
    require_command("node");
    require(&clients_dir().join("node/node_modules/pg/package.json"), "node-postgres (npm ci)");
    let mut c = Command::new("node");
    c.arg(clients_dir().join("node/client.js")).arg(mode);
    c
}

/// Compiles the JDBC client once per source version into target/clients/java/<hash> (compiled
/// in a scratch directory and renamed, so concurrent tests never see half-written classes).
fn java(mode: &str) -> Command {
    require_command("javac");
    require(Path::new(JDBC_JAR), "the PostgreSQL JDBC driver (Debian libpostgresql-jdbc-java)");
    let source = clients_dir().join("java/JdbcClient.java");
    let text = std::fs::read(&source).unwrap();
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    let classes = tools_dir().join("java").join(format!("{:016x}", h.finish()));
    if !classes.join("JdbcClient.class").exists() {
        let scratch = tools_dir().join("java").join(format!("tmp-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&scratch).unwrap();
        let (ok, out) = run_tool(
            "javac",
            &["-Xlint:all", "-cp", JDBC_JAR, "-d", scratch.to_str().unwrap(), source.to_str().unwrap()],
        );
        assert!(ok, "javac JdbcClient.java failed:\n{out}");
        if std::fs::rename(&scratch, &classes).is_err() {
            // Another test compiled the same source first.
            let _ = std::fs::remove_dir_all(&scratch);
        }
    }
    let mut c = Command::new("java");
    c.arg("-cp").arg(format!("{}:{JDBC_JAR}", classes.display())).arg("JdbcClient").arg(mode);
    c
}

fn plain_router(tls: bool) -> Router {
    Router::start(RouterOptions { tls, pool_max_size: 10, ..RouterOptions::default() })
}

/// The 4-shard commerce router, with `<prefix>_users` sharded by `id` like `users`.
fn sharded_router(prefix: &str) -> Router {
    let extra = format!(
        "{}\n[vschema.keyspaces.commerce.tables.{prefix}_users]\n\
         column_vindexes = [{{ column = \"id\", vindex = \"hash_id\" }}]\n",
        commerce_routing(4)
    );
    Router::start(RouterOptions {
        cluster: Some(sharded_cluster()),
        shards: 4,
        extra,
        ..RouterOptions::default()
    })
}

/// The client's rows went to several shards, each row to one.
fn assert_spread(table: &str, total: i64) {
    let cl = sharded_cluster();
    let per_shard: Vec<i64> = (0..4)
        .map(|s| {
            cl.psql(s, DATABASE, &format!("SELECT count(*) FROM {table}")).unwrap().trim().parse().unwrap()
        })
        .collect();
    assert_eq!(per_shard.iter().sum::<i64>(), total, "{table} rows per shard: {per_shard:?}");
    assert!(per_shard.iter().filter(|n| **n > 0).count() >= 3, "{table} rows per shard: {per_shard:?}");
}

fn plain_target(r: &Router) -> Target<'_> {
    Target { router: r, tls: false }
}

#[test]
fn psycopg_transaction_pooling() {
    let r = plain_router(false);
    run_client("psycopg", python("psycopg_client.py", "plain"), plain_target(&r));
}

#[test]
fn psycopg_over_tls() {
    let r = plain_router(true);
    run_client("psycopg-tls", python("psycopg_client.py", "plain"), Target { router: &r, tls: true });
}

#[test]
fn psycopg_sharded() {
    let r = sharded_router("psy");
    run_client("psycopg-sharded", python("psycopg_client.py", "sharded"), plain_target(&r));
    assert_spread("psy_users", 68);
}

#[test]
fn asyncpg_transaction_pooling() {
    let r = plain_router(false);
    run_client("asyncpg", python("asyncpg_client.py", "plain"), plain_target(&r));
}

#[test]
fn asyncpg_over_tls() {
    let r = plain_router(true);
    run_client("asyncpg-tls", python("asyncpg_client.py", "plain"), Target { router: &r, tls: true });
}

#[test]
fn asyncpg_sharded() {
    let r = sharded_router("asy");
    run_client("asyncpg-sharded", python("asyncpg_client.py", "sharded"), plain_target(&r));
    assert_spread("asy_users", 65);
}

#[test]
fn node_postgres_transaction_pooling() {
    let r = plain_router(false);
    run_client("node-postgres", node("plain"), plain_target(&r));
}

#[test]
fn node_postgres_over_tls() {
    let r = plain_router(true);
    run_client("node-postgres-tls", node("plain"), Target { router: &r, tls: true });
}

#[test]
fn node_postgres_sharded() {
    let r = sharded_router("node");
    run_client("node-postgres-sharded", node("sharded"), plain_target(&r));
    assert_spread("node_users", 65);
}

#[test]
fn jdbc_transaction_pooling() {
    let r = plain_router(false);
    run_client("jdbc", java("plain"), plain_target(&r));
}

#[test]
fn jdbc_over_tls() {
    let r = plain_router(true);
    run_client("jdbc-tls", java("plain"), Target { router: &r, tls: true });
}

#[test]
fn jdbc_sharded() {
    let r = sharded_router("jdbc");
    run_client("jdbc-sharded", java("sharded"), plain_target(&r));
    assert_spread("jdbc_users", 65);
}

/// A figure from sysbench's report, e.g. `ignored errors:   0   (0.00 per sec.)` -> 0.
fn sysbench_figure(out: &str, label: &str) -> u64 {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(label).and_then(|rest| rest.split_whitespace().next()))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `{label}` in sysbench output:\n{out}"))
}

/// sysbench's OLTP workloads (libpq, server-side prepared statements, 4 threads) run without an
/// error or reconnect. sysbench counts deadlocks and duplicate keys as "ignored errors" and
/// retries; any other error aborts the run.
#[test]
fn sysbench_oltp_through_the_router() {
    require_command("sysbench");
    let r = plain_router(false);
    let port = format!("--pgsql-port={}", r.port);
    let user = format!("--pgsql-user={APP_USER}");
    let password = format!("--pgsql-password={APP_PASSWORD}");
    let db = format!("--pgsql-db={DATABASE}");
    let sysbench = |workload: &str, action: &str, extra: &[&str]| -> String {
        let mut args = vec![
            workload,
            "--db-driver=pgsql",
            "--pgsql-host=127.0.0.1",
            &port,
            &user,
            &password,
            &db,
            "--tables=2",
            "--table-size=1000",
        ];
        args.extend_from_slice(extra);
        args.push(action);
        let (ok, out) = run_tool("sysbench", &args);
        assert!(ok, "sysbench {workload} {action} failed:\n{out}");
        out
    };
    sysbench("oltp_read_write", "prepare", &[]);
    // With several threads, the DELETE+INSERT pair of oltp_read_write races on PostgreSQL itself
    // (duplicate keys, counted as ignored errors: 1-3 per 5 s run directly against one server),
    // so the 4-thread run leaves it out and a 1-thread run covers it.
    let runs: [(&str, &[&str]); 3] = [
        ("oltp_read_write", &["--time=5", "--threads=4", "--rand-type=uniform", "--delete_inserts=0"]),
        ("oltp_point_select", &["--time=5", "--threads=4", "--rand-type=uniform"]),
        ("oltp_read_write", &["--time=3", "--threads=1"]),
    ];
    for (workload, run) in runs {
        let out = sysbench(workload, "run", run);
        println!("sysbench {workload} {run:?}:\n{out}");
        assert!(sysbench_figure(&out, "transactions:") > 0, "{workload}: no transactions\n{out}");
        assert_eq!(sysbench_figure(&out, "ignored errors:"), 0, "{workload}: ignored errors\n{out}");
        assert_eq!(sysbench_figure(&out, "reconnects:"), 0, "{workload}: reconnects\n{out}");
    }
    sysbench("oltp_read_write", "cleanup", &[]);
}
