//! Test harness: real PostgreSQL 15 servers and an in-process pg-router in front of them.
//!
//! [`cluster()`] starts the shard servers once per test binary (initdb once, then copies of the
//! data directory), on free loopback ports, as the `postgres` OS user when running as root
//! (PostgreSQL refuses to run as root). A watchdog shell process stops the servers and removes
//! their directory when the test binary exits, however it exits. Tests keep independent by
//! using their own tables or databases.
//!
//! [`Router::start`] runs pg-router in-process on its own runtime and port, with a config built
//! from [`RouterOptions`].

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context, Result};

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// Superuser the router logs into the shards with.
pub const PG_USER: &str = "pgr";
pub const PG_PASSWORD: &str = "pgr-secret";
/// Users clients log into the router with.
pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app-secret";
pub const MD5_USER: &str = "legacy";
pub const MD5_PASSWORD: &str = "legacy-secret";
pub const DATABASE: &str = "app";

/// A running set of PostgreSQL servers.
pub struct Cluster {
    pub dir: PathBuf,
    pub ports: Vec<u16>,
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

/// Runs a PostgreSQL tool, as the `postgres` user when we are root.
fn pg_command(tool: &str) -> Command {
    let path = format!("{PG_BIN}/{tool}");
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", &path]);
        c
    } else {
        Command::new(path)
    }
}

fn run(mut c: Command, what: &str) -> Result<String> {
    let out = c.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A free loopback port (bound, then released) for a server a test starts later.
///
/// Taken below Linux's ephemeral range (32768 and up by default): a port the kernel hands out
/// for `bind(0)` can be reused at once as the source port of some outgoing connection before
/// the server binds it. Test processes start at different offsets (by pid) to avoid each other.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::process::id().wrapping_mul(7919);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOW + base.wrapping_add(n.wrapping_mul(13)) % SPAN;
        if let Ok(port) = u16::try_from(port) {
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

impl Cluster {
    fn start(shards: usize) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("pg-router-test-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir)?;
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["postgres:postgres", dir.to_str().unwrap_or_default()]);
                    c
                },
                "chown",
            )?;
        }
        let template = dir.join("template");
        let pwfile = dir.join("pwfile");
        std::fs::write(&pwfile, PG_PASSWORD)?;
        if is_root() {
            let mut c = Command::new("chown");
            c.args(["postgres:postgres", pwfile.to_str().unwrap_or_default()]);
            run(c, "chown pwfile")?;
        }
        let mut c = pg_command("initdb");
        c.args(["-D", template.to_str().unwrap_or_default(), "-U", PG_USER, "--pwfile"]).arg(&pwfile).args([
            "-A",
            "scram-sha-256",
            "--auth-local=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ]);
        run(c, "initdb")?;
        let conf = "listen_addresses = '127.0.0.1'\nmax_connections = 200\nmax_prepared_transactions = 64\n\
                    wal_level = logical\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
                    shared_buffers = 32MB\nlog_min_messages = warning\n";
        let mut ports = Vec::new();
        for i in 0..shards {
            let data = dir.join(format!("shard{i}"));
            let mut c = if is_root() { Command::new("runuser") } else { Command::new("cp") };
            if is_root() {
                c.args(["-u", "postgres", "--", "cp"]);
            }
            c.arg("-a").arg(&template).arg(&data);
            run(c, "copy data dir")?;
            let port = free_port();
            let conf_path = data.join("postgresql.auto.conf");
            let mut c = if is_root() { Command::new("runuser") } else { Command::new("sh") };
            if is_root() {
                c.args(["-u", "postgres", "--", "sh"]);
            }
            let text = format!("{conf}port = {port}\nunix_socket_directories = '{}'\n", data.display());
            c.args(["-c", &format!("printf '%s' \"$0\" >> {}", conf_path.display()), &text]);
            run(c, "write config")?;
            let mut c = pg_command("pg_ctl");
            c.args(["-D", data.to_str().unwrap_or_default(), "-w", "-t", "60", "-l"])
                .arg(data.join("log"))
                .arg("start");
            run(c, "pg_ctl start")?;
            ports.push(port);
        }
        watchdog(&dir, shards)?;
        let cluster = Self { dir, ports };
        for i in 0..shards {
            cluster.psql(i, "postgres", &format!("CREATE DATABASE {DATABASE}"))?;
        }
        Ok(cluster)
    }

    /// Runs SQL on shard `i` through its Unix socket as the superuser.
    pub fn psql(&self, i: usize, db: &str, sql: &str) -> Result<String> {
        let data = self.dir.join(format!("shard{i}"));
        let mut c = Command::new("psql");
        c.args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h"]).arg(&data).args([
            "-p",
            &self.ports[i].to_string(),
            "-U",
            PG_USER,
            "-d",
            db,
            "-c",
            sql,
        ]);
        run(c, "psql")
    }

    /// Stops server `i` (immediate shutdown: connections drop as in a crash).
    pub fn stop(&self, i: usize) -> Result<()> {
        let mut c = pg_command("pg_ctl");
        c.args(["-D", self.data_dir(i).to_str().unwrap_or_default(), "-m", "immediate", "stop"]);
        run(c, "pg_ctl stop").map(|_| ())
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("shard{i}"))
    }

    /// Turns TLS on for server `i` with a certificate for `localhost` and `127.0.0.1` signed
    /// by a fresh test CA, and returns the CA's PEM file (what `shards[].tls_ca_file` names).
    pub fn enable_tls(&self, i: usize) -> Result<PathBuf> {
        let data = self.data_dir(i);
        let dir = self.dir.join(format!("tls-ca-{i}"));
        std::fs::create_dir_all(&dir)?;
        let (ca, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
        let (cert, key, csr, ext) =
            (data.join("server.crt"), data.join("server.key"), dir.join("server.csr"), dir.join("san.ext"));
        std::fs::write(&ext, "subjectAltName = DNS:localhost, IP:127.0.0.1\n")?;
        let mut c = Command::new("openssl");
        c.args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=pg-router test CA",
        ])
        .arg("-keyout")
        .arg(&ca_key)
        .arg("-out")
        .arg(&ca);
        run(c, "openssl CA")?;
        let mut c = Command::new("openssl");
        c.args(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&csr);
        run(c, "openssl server key")?;
        let mut c = Command::new("openssl");
        c.args(["x509", "-req", "-CAcreateserial", "-days", "2", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&ca)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&cert);
        run(c, "openssl sign")?;
        if is_root() {
            let mut c = Command::new("chown");
            c.arg("postgres:postgres").arg(&cert).arg(&key);
            run(c, "chown server cert")?;
        }
        let mut c = Command::new("chmod");
        c.arg("600").arg(&key);
        run(c, "chmod server key")?;
        self.psql(i, "postgres", "ALTER SYSTEM SET ssl = on")?;
        self.psql(i, "postgres", "SELECT pg_reload_conf()")?;
        // The postmaster rereads its configuration asynchronously.
        for _ in 0..100 {
            if self.psql(i, "postgres", "SHOW ssl")?.trim() == "on" {
                return Ok(ca);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("server {i} did not turn ssl on")
    }

    /// A tokio-postgres config for connecting to shard `i` directly.
    pub fn direct(&self, i: usize) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host("127.0.0.1").port(self.ports[i]).user(PG_USER).password(PG_PASSWORD).dbname(DATABASE);
        c
    }
}

/// Stops the servers and removes `dir` once this test process is gone.
fn watchdog(dir: &Path, shards: usize) -> Result<()> {
    let mut stops = String::new();
    for i in 0..shards {
        stops.push_str(&format!(
            "{}/pg_ctl -D {}/shard{i} -m immediate stop >/dev/null 2>&1; ",
            PG_BIN,
            dir.display()
        ));
    }
    // Each command ends with `;` so the `rm` below runs on its own, not as arguments of `sh -c`.
    let as_pg = if is_root() { format!("runuser -u postgres -- sh -c '{stops}'; ") } else { stops };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {as_pg} rm -rf {dir}",
        pid = std::process::id(),
        dir = dir.display()
    );
    Command::new("setsid")
        .args(["sh", "-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting the cleanup watchdog")?;
    Ok(())
}

/// The shard servers shared by every test in this binary (two shards).
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| match Cluster::start(2) {
        Ok(c) => c,
        Err(e) => panic!("cannot start PostgreSQL for the tests: {e:#}"),
    })
}

/// Five servers: four shards for a sharded router and a fifth, plain PostgreSQL holding the
/// same data unsharded (the reference for differential tests).
pub fn sharded_cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| match Cluster::start(5) {
        Ok(c) => c,
        Err(e) => panic!("cannot start PostgreSQL for the tests: {e:#}"),
    })
}

/// The test VSchema over `shards` shards (2 or 4) of [`sharded_cluster`]: keyspace `main`
/// (unsharded, the default, on s0) and keyspace `commerce` (hash-sharded `users` and `orders`,
/// co-located on the user id; `products` sharded by sku; `countries` a reference table).
pub fn commerce_routing(shards: usize) -> String {
    let ranges: &[&str] = match shards {
        2 => &["-80", "80-"],
        _ => &["-40", "40-80", "80-c0", "c0-"],
    };
    let mut toml = String::from(
        r#"
[routing]
default_keyspace = "main"

[vschema.keyspaces.main]
sharded = false

[vschema.keyspaces.commerce]
sharded = true

[vschema.keyspaces.commerce.vindexes.hash_id]
type = "hash"
params = { column_type = "int" }

[vschema.keyspaces.commerce.vindexes.hash_sku]
type = "hash"
params = { column_type = "text" }

[vschema.keyspaces.commerce.tables.users]
column_vindexes = [{ column = "id", vindex = "hash_id" }]

[vschema.keyspaces.commerce.tables.orders]
column_vindexes = [{ column = "user_id", vindex = "hash_id" }]

[vschema.keyspaces.commerce.tables.products]
column_vindexes = [{ column = "sku", vindex = "hash_sku" }]

[vschema.keyspaces.commerce.tables.countries]
type = "reference"

[vschema.keyspaces.main.tables.event_seq]
type = "sequence"

[vschema.keyspaces.commerce.tables.events]
column_vindexes = [{ column = "id", vindex = "hash_id" }]
auto_increment = { column = "id", sequence = "main.event_seq" }

[shard_map]
version = 1

[[shard_map.keyspaces.main.shards]]
name = "s0"
range = "-"
"#,
    );
    for (i, r) in ranges.iter().enumerate() {
        toml.push_str(&format!(
            "\n[[shard_map.keyspaces.commerce.shards]]\nname = \"s{i}\"\nrange = \"{r}\"\n"
        ));
    }
    toml
}

/// Knobs for a test router.
#[derive(Clone)]
pub struct RouterOptions {
    pub pool_mode: &'static str,
    pub pool_max_size: usize,
    pub checkout_timeout_ms: u64,
    pub max_client_connections: usize,
    pub max_message_bytes: usize,
    pub tls: bool,
    pub tls_required: bool,
    pub shutdown_timeout_ms: u64,
    pub metrics: bool,
    /// Shard servers: the two-shard [`cluster`] (default) or another one.
    pub cluster: Option<&'static Cluster>,
    /// Use only the first `n` servers of the cluster as shards (0 = all).
    pub shards: usize,
    /// Appended to the config file (routing, vschema, shard map).
    pub extra: String,
    /// `[[shards]]` entries written instead of one per cluster server.
    pub shards_toml: Option<String>,
    /// The `[control]` section; `None`: an embedded control node with its own data dir and API
    /// port (token [`CONTROL_TOKEN`]).
    pub control: Option<String>,
}

/// The admin token of test routers' embedded control nodes.
pub const CONTROL_TOKEN: &str = "test-control-token";

impl Default for RouterOptions {
    fn default() -> Self {
        Self {
            pool_mode: "transaction",
            pool_max_size: 20,
            checkout_timeout_ms: 5_000,
            max_client_connections: 200,
            max_message_bytes: 1 << 20,
            tls: false,
            tls_required: false,
            shutdown_timeout_ms: 5_000,
            metrics: false,
            cluster: None,
            shards: 0,
            extra: String::new(),
            shards_toml: None,
            control: None,
        }
    }
}

/// A self-signed certificate and key for `localhost`, made with the openssl CLI once.
pub fn test_cert() -> &'static (PathBuf, PathBuf) {
    static CERT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    CERT.get_or_init(|| {
        let dir = cluster().dir.join("tls");
        let _ = std::fs::create_dir_all(&dir);
        let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
        let mut c = Command::new("openssl");
        c.args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert);
        if let Err(e) = run(c, "openssl req") {
            panic!("cannot make a test certificate: {e:#}");
        }
        (cert, key)
    })
}

/// An in-process pg-router.
pub struct Router {
    pub port: u16,
    pub metrics_port: Option<u16>,
    /// The embedded control node's API, when the router runs one.
    pub control_addr: Option<std::net::SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Router {
    pub fn config_toml(opts: &RouterOptions, port: u16, metrics_port: Option<u16>) -> String {
        let c = opts.cluster.unwrap_or_else(cluster);
        let mut toml = format!(
            "databases = [\"{DATABASE}\"]\n\n[server]\nlisten = \"127.0.0.1:{port}\"\npool_mode = \"{}\"\n\
             max_client_connections = {}\nmax_message_bytes = {}\nshutdown_timeout_ms = {}\n\n\
             [pool]\nmax_size = {}\ncheckout_timeout_ms = {}\nconnect_timeout_ms = 5000\n\n\
             [[users]]\nname = \"{APP_USER}\"\npassword = \"{APP_PASSWORD}\"\nbackend_user = \"{PG_USER}\"\n\
             backend_password = \"{PG_PASSWORD}\"\n\n\
             [[users]]\nname = \"{MD5_USER}\"\npassword = \"{MD5_PASSWORD}\"\nauth = \"md5\"\n\
             backend_user = \"{PG_USER}\"\nbackend_password = \"{PG_PASSWORD}\"\n",
            opts.pool_mode,
            opts.max_client_connections,
            opts.max_message_bytes,
            opts.shutdown_timeout_ms,
            opts.pool_max_size,
            opts.checkout_timeout_ms,
        );
        let n = if opts.shards == 0 { c.ports.len() } else { opts.shards };
        match &opts.shards_toml {
            Some(entries) => toml.push_str(entries),
            None => {
                for (i, p) in c.ports.iter().take(n).enumerate() {
                    toml.push_str(&format!(
                        "\n[[shards]]\nname = \"s{i}\"\nhost = \"127.0.0.1\"\nport = {p}\n"
                    ));
                }
            }
        }
        if opts.tls {
            let (cert, key) = test_cert();
            toml.push_str(&format!(
                "\n[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nrequire = {}\n",
                cert.display(),
                key.display(),
                opts.tls_required
            ));
        }
        if let Some(m) = metrics_port {
            toml.push_str(&format!("\n[metrics]\nlisten = \"127.0.0.1:{m}\"\n"));
        }
        toml.push_str(&opts.extra);
        match &opts.control {
            Some(section) => toml.push_str(section),
            None => {
                static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let dir = c.dir.join(format!("control-{}-{n}", std::process::id()));
                toml.push_str(&format!(
                    "\n[control]\nmode = \"embedded\"\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{}\"\ntoken = \"{CONTROL_TOKEN}\"\n",
                    dir.display(),
                    free_port()
                ));
            }
        }
        toml
    }

    pub fn start(opts: RouterOptions) -> Self {
        let listener = match std::net::TcpListener::bind("127.0.0.1:0") {
            Ok(l) => l,
            Err(e) => panic!("bind: {e}"),
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let metrics_port = opts.metrics.then(metrics_port);
        let toml = Self::config_toml(&opts, port, metrics_port);
        let config = match router::config::RawConfig::from_toml(&toml).and_then(|r| r.validate()) {
            Ok(c) => c,
            Err(e) => panic!("test config invalid: {e}\n{toml}"),
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            // The runtime pg-router serves sessions on (I/O only, timers on a background thread).
            let rt = match router::timer::session_runtime(2) {
                Ok(rt) => rt,
                Err(e) => panic!("runtime: {e}"),
            };
            rt.block_on(async move {
                if let Some(m) = config.metrics_listen {
                    install_metrics(m);
                }
                let shared = match router::server::shared(config) {
                    Ok(s) => s,
                    Err(e) => panic!("router state: {e:#}"),
                };
                let _ = listener.set_nonblocking(true);
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => panic!("listener: {e}"),
                };
                let control = match router::control::start(shared.clone()).await {
                    Ok(c) => c,
                    Err(e) => panic!("control plane: {e:#}"),
                };
                let _ = ready_tx.send(control.as_ref().and_then(router::control::ControlPlane::api_addr));
                router::server::serve(listener, shared, async {
                    let _ = stop_rx.await;
                })
                .await;
                if let Some(c) = control {
                    c.shutdown().await;
                }
            });
        });
        let control_addr = ready_rx.recv_timeout(Duration::from_secs(30)).ok().flatten();
        Self { port, metrics_port, control_addr, stop: Some(stop_tx), thread: Some(thread) }
    }

    /// Starts a graceful shutdown and returns a handle that waits for it to finish.
    pub fn begin_shutdown(&mut self) -> std::thread::JoinHandle<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.thread.take() {
            Some(t) => t,
            None => std::thread::spawn(|| {}),
        }
    }

    pub fn config(&self, user: &str, password: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host("127.0.0.1").port(self.port).user(user).password(password).dbname(DATABASE);
        c
    }

    /// Connects as the app user and drives the connection on a background task.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        connect(self.config(APP_USER, APP_PASSWORD)).await
    }

    /// A libpq connection string for psql/pgbench.
    pub fn conninfo(&self, extra: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={APP_USER} password={APP_PASSWORD} dbname={DATABASE} {extra}",
            self.port
        )
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        // The server drains for at most its shutdown timeout; don't join to keep drops cheap.
    }
}

/// The metrics recorder and its endpoint are process-global: every router of a test process
/// that asks for metrics gets this one port, and the endpoint is started once.
fn metrics_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(free_port)
}

fn install_metrics(addr: std::net::SocketAddr) {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        if let Err(e) = router::metrics::install(addr) {
            panic!("metrics: {e:#}");
        }
    });
}

/// Connects with tokio-postgres (no TLS) and spawns the connection task.
pub async fn connect(
    config: tokio_postgres::Config,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The SQLSTATE of a tokio-postgres error, if the server sent one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<String> {
    e.as_db_error().map(|d| d.code().code().to_owned())
}

/// Runs a command-line client (psql, pgbench) and returns (success, stdout + stderr).
pub fn run_tool(program: &str, args: &[&str]) -> (bool, String) {
    match Command::new(program).args(args).output() {
        Ok(o) => (
            o.status.success(),
            format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
        ),
        Err(e) => (false, format!("cannot run {program}: {e}")),
    }
}
