//! The router's side of the control plane: start the embedded control node or follow a remote
//! control cluster, and swap in every new routing version.
//!
//! A version is applied whole: a new [`Topology`] (VSchema, shard map, shard endpoints, a fresh
//! planner and plan cache) replaces the old one in one pointer swap. Sessions pick it up between
//! transactions, so a statement or transaction never mixes versions. Shards are reached at the
//! addresses the control store gives, with the users' backend credentials from the config file;
//! a shard the config's `[[shards]]` also lists keeps its TLS settings there, others are reached
//! without TLS. A version the router cannot build is refused with an error in the log and the
//! router keeps the one it has. When the stream to a remote control cluster breaks, the router
//! keeps serving on its last version, says so in the log, and shows
//! `pg_router_control_connected 0`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use control::api::WatchEvent;
use control::client::AdminClient;
use control::http::Method;
use control::{Command, ControlNode, NodeOptions, RouterRecord, RoutingDoc, ShardEndpoint};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{Config, ControlConfig, RoutingConfig};
use crate::session::Shared;
use crate::topology::Topology;

/// The running control-plane side of a router; dropped or [`ControlPlane::shutdown`] at exit.
pub struct ControlPlane {
    node: Option<ControlNode>,
    task: Option<JoinHandle<()>>,
    /// Whether the router follows its control plane right now (always true when embedded).
    connected: watch::Receiver<bool>,
}

impl ControlPlane {
    /// The embedded control node's API address, if this router runs one.
    #[must_use]
    pub fn api_addr(&self) -> Option<std::net::SocketAddr> {
        self.node.as_ref().map(ControlNode::addr)
    }

    /// Whether the router follows its control plane right now; when false it serves on the
    /// last version it applied.
    #[must_use]
    pub fn connected(&self) -> bool {
        *self.connected.borrow()
    }

    pub async fn shutdown(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        if let Some(n) = self.node.take() {
            // On the runtime the node runs on (it has the timers Raft needs to stop).
            let _ = crate::timer::spawn(n.shutdown()).await;
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// The routing documents of a config file, as the control store keeps them.
#[must_use]
pub fn routing_doc(config: &Config) -> RoutingDoc {
    RoutingDoc {
        vschema: config.routing.vschema.doc().clone(),
        shard_map: vindex::ShardMapDoc::from((*config.routing.shard_map).clone()),
        shards: config
            .shards
            .iter()
            .map(|s| (s.name.clone(), ShardEndpoint { host: s.host.clone(), port: s.port }))
            .collect(),
    }
}

/// Starts the control plane the config asks for and applies its current version before
/// returning, so the router serves clients only once it routes by the control store.
///
/// The control plane runs on the background runtime ([`crate::timer`]), which has the timers
/// Raft and the watch stream need; sessions only see the topologies it swaps in.
pub async fn start(shared: Arc<Shared>) -> anyhow::Result<Option<ControlPlane>> {
    match crate::timer::spawn(start_here(shared)).await {
        Ok(started) => started,
        Err(e) => Err(anyhow::anyhow!("the control plane's start failed: {e}")),
    }
}

async fn start_here(shared: Arc<Shared>) -> anyhow::Result<Option<ControlPlane>> {
    let config = shared.config.clone();
    match &config.control {
        ControlConfig::Off => Ok(None),
        ControlConfig::Embedded { data_dir, listen, node_id, token, router_id } => {
            let node = ControlNode::start(NodeOptions {
                id: *node_id,
                data_dir: data_dir.clone(),
                listen: *listen,
                advertise: None,
                token: token.clone(),
                limits: control::api::ApiLimits::default(),
            })
            .await
            .with_context(|| format!("starting the embedded control node in {}", data_dir.display()))?;
            let wanted = routing_doc(&config);
            let catalog = node
                .bootstrap_single(wanted.clone())
                .await
                .context("bootstrapping the embedded control store")?;
            if catalog_differs(&catalog.routing(), &wanted) {
                tracing::info!(
                    version = catalog.version,
                    data_dir = %data_dir.display(),
                    "routing comes from the control store, which differs from the config file (change it with pg-router ctl)"
                );
            }
            apply(&shared, &WatchEvent::of(&catalog)).map_err(|e| anyhow::anyhow!(e))?;
            let mut versions = node.catalog().subscribe();
            let raft = node.raft.clone();
            let handle = node.catalog().clone();
            let router_id = router_id.clone();
            let addr = config.listen.to_string();
            report_embedded(&raft, &handle, &router_id, &addr, catalog.version).await;
            metrics::gauge!("pg_router_control_connected").set(1.0);
            tracing::info!(api = %node.addr(), version = catalog.version, "embedded control node ready");
            let task = tokio::spawn(async move {
                while versions.changed().await.is_ok() {
                    let ev = WatchEvent::of(&versions.borrow_and_update());
                    if let Err(e) = apply(&shared, &ev) {
                        tracing::error!(version = ev.version, error = %e, "cannot apply routing version; keeping the current one");
                        continue;
                    }
                    report_embedded(&raft, &handle, &router_id, &addr, ev.version).await;
                }
            });
            Ok(Some(ControlPlane { node: Some(node), task: Some(task), connected: watch::channel(true).1 }))
        }
        ControlConfig::Remote { endpoints, token, router_id, startup_timeout } => {
            let (tx, mut rx) = mpsc::channel(8);
            let (connected_tx, mut connected) = watch::channel(false);
            let status = connected.clone();
            let follower = tokio::spawn(control::client::follow(endpoints.clone(), 0, tx, connected_tx));
            let first = match tokio::time::timeout(*startup_timeout, rx.recv()).await {
                Ok(Some(ev)) => ev,
                _ => {
                    follower.abort();
                    anyhow::bail!(
                        "no routing version from the control plane at {} within {:?}",
                        endpoints.join(", "),
                        startup_timeout
                    );
                }
            };
            apply(&shared, &first).map_err(|e| anyhow::anyhow!(e))?;
            let admin = Arc::new(AdminClient::new(endpoints.clone(), token.clone()));
            let router_id = router_id.clone();
            let addr = config.listen.to_string();
            report_remote(&admin, &router_id, &addr, first.version);
            let task = tokio::spawn(async move {
                let gauge = metrics::gauge!("pg_router_control_connected");
                gauge.set(1.0);
                loop {
                    tokio::select! {
                        ev = rx.recv() => {
                            let Some(ev) = ev else { break };
                            if let Err(e) = apply(&shared, &ev) {
                                tracing::error!(version = ev.version, error = %e, "cannot apply routing version; keeping the current one");
                                continue;
                            }
                            report_remote(&admin, &router_id, &addr, ev.version);
                        }
                        changed = connected.changed() => {
                            if changed.is_err() { break }
                            gauge.set(if *connected.borrow_and_update() { 1.0 } else { 0.0 });
                        }
                    }
                }
                follower.abort();
            });
            Ok(Some(ControlPlane { node: None, task: Some(task), connected: status }))
        }
    }
}

fn catalog_differs(a: &RoutingDoc, b: &RoutingDoc) -> bool {
    let mut a = a.clone();
    a.shard_map.version = b.shard_map.version;
    a != *b
}

/// Builds the topology of `ev` and swaps it in.
pub fn apply(shared: &Shared, ev: &WatchEvent) -> Result<(), String> {
    let config = &shared.config;
    let vschema = ev.routing.vschema.validate().map_err(|e| format!("vschema: {e}"))?;
    let mut doc = ev.routing.shard_map.clone();
    doc.version = ev.version;
    let shard_map = vindex::ShardMap::try_from(doc).map_err(|e| format!("shard_map: {e}"))?;
    // Every shard the map names needs an endpoint; each (name, address) gets a pool of its own,
    // so a moved shard is reached at its new address while old sessions finish on the old one.
    let mut endpoints = std::collections::HashMap::new();
    for ks in shard_map.keyspaces() {
        for s in ks.shards() {
            let name = s.name.as_str();
            if endpoints.contains_key(name) {
                continue;
            }
            let Some(ep) = ev.routing.shards.get(name) else {
                return Err(format!("keyspace {} uses shard {name:?}, which has no endpoint", ks.keyspace()));
            };
            endpoints.insert(name.to_owned(), shared.pools.endpoint_for(name, &ep.host, ep.port));
        }
    }
    let default_keyspace = config
        .routing
        .default_keyspace
        .clone()
        .filter(|k| vschema.keyspace(k).is_some_and(|ks| !ks.is_sharded()));
    let routing = RoutingConfig {
        vschema: Arc::new(vschema),
        shard_map: Arc::new(shard_map),
        default_keyspace,
        ..config.routing.clone()
    };
    let current: Vec<usize> = endpoints.values().copied().collect();
    let topology = Topology::new(&routing, endpoints)
        .map_err(|e| e.to_string())?
        .with_write_blocked(ev.write_blocked.clone());
    shared.topology.set(topology);
    shared.pools.retire_unused(current);
    if !ev.write_blocked.is_empty() {
        tracing::info!(keyspaces = ?ev.write_blocked, "writes to these keyspaces are refused");
    }
    metrics::gauge!("pg_router_routing_version").set(ev.version as f64);
    tracing::info!(version = ev.version, "applied routing version");
    Ok(())
}

fn record(addr: &str, version: u64) -> RouterRecord {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    RouterRecord { addr: addr.to_owned(), version, reported_at_ms: now.as_millis() as u64 }
}

async fn report_embedded(
    raft: &control::Raft,
    handle: &control::CatalogHandle,
    id: &str,
    addr: &str,
    version: u64,
) {
    let cmd = Command::ReportRouter { id: id.to_owned(), record: record(addr, version) };
    if let Err(e) = control::node::write(raft, handle, cmd).await {
        tracing::warn!(error = %e, "cannot report this router to the control store");
    }
}

/// Reports in the background: an unreachable control plane must not hold up applying versions.
fn report_remote(admin: &Arc<AdminClient>, id: &str, addr: &str, version: u64) {
    let (admin, path, record) = (admin.clone(), format!("/v1/routers/{id}"), record(addr, version));
    tokio::spawn(async move {
        let r: Result<serde_json::Value, _> = admin.send(Method::PUT, &path, &record).await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "cannot report this router to the control plane");
        }
    });
}
