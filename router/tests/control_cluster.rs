//! HA mode with real processes: three `pg-router control` nodes on loopback, a router following
//! them in remote mode, the leader killed, a follower stopped and brought back, membership
//! changes, a corrupt log refused at start, and `pg-router ctl`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use control::client::AdminClient;
use control::http::Method;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_pg-router");
const TOKEN: &str = "cluster-test-token";

struct Node {
    id: u64,
    addr: String,
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self, extra: &[&str]) {
        assert!(self.child.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .unwrap();
        let child = Command::new(BIN)
            .args(["control", "--id", &self.id.to_string(), "--listen", &self.addr, "--data-dir"])
            .arg(&self.dir)
            .args(extra)
            .env("PG_ROUTER_CONTROL_TOKEN", TOKEN)
            .env("PG_ROUTER_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn client(&self) -> AdminClient {
        AdminClient::new(vec![self.addr.clone()], Some(TOKEN.to_owned()))
    }
}

struct Cluster {
    root: PathBuf,
    nodes: Vec<Node>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.root);
        } else {
            eprintln!("control node logs kept in {}", self.root.display());
        }
    }
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn routing_file(dir: &Path) -> PathBuf {
    let path = dir.join("routing.toml");
    std::fs::write(
        &path,
        r#"
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

[[shards]]
name = "s0"
host = "127.0.0.1"
port = 15432

[[shards]]
name = "s1"
host = "127.0.0.1"
port = 15433
"#,
    )
    .unwrap();
    path
}

async fn eventually<T>(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> (T, Duration) {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return (v, start.elapsed());
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn cluster_info(n: &Node) -> Option<Value> {
    n.client().get::<Value>("/v1/cluster").await.ok()
}

async fn stale_version(n: &Node) -> Option<u64> {
    n.client().get::<Value>("/v1/catalog?stale=1").await.ok().and_then(|c| c["version"].as_u64())
}

async fn add_shards(a: &AdminClient, names: impl Iterator<Item = String>) -> u64 {
    let mut version = 0;
    for name in names {
        let out: Value = a
            .send(Method::PUT, &format!("/v1/shards/{name}"), &json!({"host": "10.1.1.1", "port": 5432}))
            .await
            .unwrap();
        assert_eq!(out["outcome"], "applied", "{name}: {out}");
        version = out["version"].as_u64().unwrap();
    }
    version
}

fn ctl(addrs: &str, token: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let mut c = Command::new(BIN);
    c.args(["ctl", "--control", addrs]).args(args).env_remove("PG_ROUTER_CONTROL_TOKEN");
    if let Some(t) = token {
        c.env("PG_ROUTER_CONTROL_TOKEN", t);
    }
    let out = c.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A router (in this process) following the cluster in remote mode; returns its shared state.
async fn remote_router(
    addrs: &[String],
) -> (std::sync::Arc<router::session::Shared>, router::control::ControlPlane) {
    let toml = format!(
        r#"
databases = ["app"]
[server]
listen = "127.0.0.1:{}"
[[users]]
name = "app"
password = "secret"
[[shards]]
name = "s0"
host = "127.0.0.1"
port = 15432
[[shards]]
name = "s1"
host = "127.0.0.1"
port = 15433
[control]
mode = "remote"
endpoints = {:?}
token = "{TOKEN}"
router_id = "router-a"
"#,
        free_addr().rsplit_once(':').unwrap().1,
        addrs
    );
    let config = router::config::RawConfig::from_toml(&toml).unwrap().validate().unwrap();
    let shared = router::server::shared(config).unwrap();
    let plane = router::control::start(shared.clone()).await.unwrap().unwrap();
    (shared, plane)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_fail_over_catch_up_and_routers_follow() {
    let root = std::env::temp_dir().join(format!("pg-router-control-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let routing = routing_file(&root);
    let mut c = Cluster {
        root: root.clone(),
        nodes: (1..=4)
            .map(|id| Node { id, addr: free_addr(), dir: root.join(format!("n{id}")), child: None })
            .collect(),
    };
    let members =
        (0..3).map(|i| format!("{}={}", c.nodes[i].id, c.nodes[i].addr)).collect::<Vec<_>>().join(",");
    c.nodes[0].start(&["--init", &members, "--bootstrap", routing.to_str().unwrap()]);
    c.nodes[1].start(&[]);
    c.nodes[2].start(&[]);
    let addrs: Vec<String> = c.nodes[..3].iter().map(|n| n.addr.clone()).collect();
    let admin = AdminClient::new(addrs.clone(), Some(TOKEN.to_owned()));

    // Bootstrapped from the routing file through the API.
    let (catalog, _) = eventually("the bootstrap", Duration::from_secs(30), async || {
        admin.get::<Value>("/v1/catalog").await.ok().filter(|c| c["version"] == 1)
    })
    .await;
    assert_eq!(catalog["shards"]["s1"]["port"], 15433);

    // A router follows the cluster.
    let (shared, plane) = remote_router(&addrs).await;
    assert!(plane.connected());
    assert_eq!(shared.topology.get().version, 1);

    // Writes, then the leader dies.
    let v = add_shards(&admin, (0..30).map(|i| format!("a{i}"))).await;
    assert_eq!(v, 31);
    let info = cluster_info(&c.nodes[0]).await.unwrap();
    assert_eq!(info["voters"], json!([1, 2, 3]));
    let old = info["leader"].as_u64().unwrap();
    c.nodes[(old - 1) as usize].kill();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != (old - 1) as usize).collect();
    let (new_leader, took) = eventually("a new leader", Duration::from_secs(30), async || {
        for &i in &survivors {
            if let Some(l) = cluster_info(&c.nodes[i]).await.and_then(|x| x["leader"].as_u64()) {
                if l != old {
                    return Some(l);
                }
            }
        }
        None
    })
    .await;
    eprintln!("node {new_leader} leads {took:?} after node {old} was killed");

    // Writes continue; nothing acknowledged is lost.
    let v = add_shards(&admin, (0..30).map(|i| format!("b{i}"))).await;
    assert_eq!(v, 61);
    let catalog: Value = admin.get("/v1/catalog").await.unwrap();
    assert_eq!(catalog["version"], 61);
    for i in 0..30 {
        assert!(
            catalog["shards"][format!("a{i}")].is_object() && catalog["shards"][format!("b{i}")].is_object()
        );
    }
    let (_, took) = eventually("the router to follow", Duration::from_secs(30), async || {
        (shared.topology.get().version == 61).then_some(())
    })
    .await;
    eprintln!("the router serves version 61 {took:?} after it was acknowledged");
    eventually("the router's report", Duration::from_secs(30), async || {
        let routers: Value = admin.get("/v1/routers").await.ok()?;
        (routers["router-a"]["version"] == 61).then_some(())
    })
    .await;

    // A read through a follower is linearizable: it is answered by the leader (the client
    // follows the follower's pointer), so it sees the write acknowledged just before.
    let leader_now = admin.get::<Value>("/v1/cluster").await.unwrap()["leader"].as_u64().unwrap();
    let some_follower = survivors.iter().copied().find(|i| *i as u64 + 1 != leader_now).unwrap();
    let v = add_shards(&admin, std::iter::once("lin".to_owned())).await;
    let seen: Value = c.nodes[some_follower].client().get("/v1/catalog").await.unwrap();
    assert_eq!(seen["version"].as_u64(), Some(v));
    assert!(seen["shards"]["lin"].is_object());

    // The killed node comes back and catches up from the log.
    let back = (old - 1) as usize;
    c.nodes[back].start(&[]);
    eventually("the restarted node to catch up", Duration::from_secs(30), async || {
        (stale_version(&c.nodes[back]).await == Some(62)).then_some(())
    })
    .await;

    // A follower misses enough writes that the leader compacts its log past them: it comes
    // back through a snapshot.
    let leader = admin.get::<Value>("/v1/cluster").await.unwrap()["leader"].as_u64().unwrap();
    let follower = (0..3).find(|i| *i as u64 + 1 != leader).unwrap();
    c.nodes[follower].kill();
    let v = add_shards(&admin, (0..560).map(|i| format!("c{i}"))).await;
    assert_eq!(v, 622);
    let snapshot = c.nodes[follower].dir.join("raft/snapshot");
    let had_snapshot = std::fs::metadata(&snapshot).map(|m| m.modified().unwrap()).ok();
    c.nodes[follower].start(&[]);
    eventually("the stopped follower to catch up", Duration::from_secs(60), async || {
        (stale_version(&c.nodes[follower]).await == Some(622)).then_some(())
    })
    .await;
    let got_snapshot = std::fs::metadata(&snapshot).map(|m| m.modified().unwrap()).ok();
    assert!(got_snapshot.is_some() && got_snapshot != had_snapshot, "the follower installed a snapshot");

    // Membership: a fourth node joins as a learner, is promoted, then removed.
    c.nodes[3].start(&[]);
    let n4 = c.nodes[3].addr.clone();
    let info: Value =
        admin.send(Method::POST, "/v1/members/learners", &json!({"id": 4, "addr": n4})).await.unwrap();
    assert_eq!(info["nodes"].as_object().unwrap().len(), 4, "{info}");
    eventually("the learner to catch up", Duration::from_secs(30), async || {
        (stale_version(&c.nodes[3]).await == Some(622)).then_some(())
    })
    .await;
    let info: Value =
        admin.send(Method::POST, "/v1/members/voters", &json!({"voters": [1, 2, 3, 4]})).await.unwrap();
    assert_eq!(info["voters"], json!([1, 2, 3, 4]));
    let info: Value =
        admin.send(Method::POST, "/v1/members/voters", &json!({"voters": [1, 2, 3]})).await.unwrap();
    assert_eq!(info["voters"], json!([1, 2, 3]));
    assert_eq!(info["nodes"].as_object().unwrap().len(), 3, "{info}");

    // ctl: reads need no token, writes do.
    let all = addrs.join(",");
    let (ok, out, err) = ctl(&all, None, &["cluster"]);
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["voters"], json!([1, 2, 3]));
    let (ok, _, err) = ctl(&all, None, &["add-shard", "z", "127.0.0.1:1"]);
    assert!(!ok && err.contains("Authorization"), "{err}");
    let (ok, out, err) = ctl(&all, Some(TOKEN), &["add-shard", "z", "127.0.0.1:1"]);
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["version"], 623);
    let (ok, _, err) = ctl(&all, Some(TOKEN), &["remove-shard", "s1"]);
    assert!(!ok && err.contains("\"s1\", which has no endpoint"), "{err}");

    // With every node gone the router keeps serving on the last version it applied.
    eventually("the router to apply 623", Duration::from_secs(30), async || {
        (shared.topology.get().version == 623).then_some(())
    })
    .await;
    for n in &mut c.nodes[..3] {
        n.kill();
    }
    eventually("the router to notice", Duration::from_secs(30), async || (!plane.connected()).then_some(()))
        .await;
    assert_eq!(shared.topology.get().version, 623);

    // A damaged log is refused at start with the file named.
    c.nodes[3].kill();
    let seg_dir = c.nodes[3].dir.join("raft/log");
    let mut segs: Vec<PathBuf> = std::fs::read_dir(&seg_dir).unwrap().map(|e| e.unwrap().path()).collect();
    segs.sort();
    let seg = segs.first().expect("node 4 has a log segment").clone();
    let mut bytes = std::fs::read(&seg).unwrap();
    assert!(bytes.len() > 200, "segment too short to damage in the middle");
    bytes[20] ^= 0x55;
    std::fs::write(&seg, &bytes).unwrap();
    c.nodes[3].start(&[]);
    let mut child = c.nodes[3].child.take().unwrap();
    let (status, _) =
        eventually("the damaged node to exit", Duration::from_secs(30), async || child.try_wait().unwrap())
            .await;
    assert!(!status.success());
    let log = std::fs::read_to_string(c.nodes[3].dir.with_extension("log")).unwrap();
    assert!(log.contains("is corrupt at byte 0") && log.contains(&seg.display().to_string()), "{log}");
}
