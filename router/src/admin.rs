//! The `pg-router control` (a control node of an HA cluster) and `pg-router ctl` (the admin
//! client) subcommands.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use control::api::{AddLearner, SetVoters, WriteBlock};
use control::client::AdminClient;
use control::http::Method;
use control::{ControlNode, NodeOptions, ShardEndpoint};

/// `pg-router control`: one node of a control cluster.
#[derive(Args, Debug)]
pub struct ControlArgs {
    /// This node's id (unique in the cluster, fixed for its lifetime).
    #[arg(long)]
    pub id: u64,
    /// Address of the node's API, which also carries Raft traffic.
    #[arg(long, default_value = "127.0.0.1:7432")]
    pub listen: SocketAddr,
    /// Address other nodes and clients use to reach this node (default: --listen).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Directory of the node's log, vote and snapshots.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Bearer token for writes and Raft RPCs (or set PG_ROUTER_CONTROL_TOKEN).
    #[arg(long, env = "PG_ROUTER_CONTROL_TOKEN", hide_env_values = true)]
    pub token: String,
    /// On first start, initialize the cluster with these members (`1=host:port,2=host:port,...`).
    /// Give it to one node only; the others join through it.
    #[arg(long, value_delimiter = ',')]
    pub init: Vec<String>,
    /// With --init: also store this routing file (TOML with `vschema`, `shard_map` and `[[shards]]`
    /// name/host/port, the router config's sections) as the first catalog.
    #[arg(long)]
    pub bootstrap: Option<PathBuf>,
}

/// `pg-router ctl`: talks to the control API.
#[derive(Args, Debug)]
pub struct CtlArgs {
    /// Control API addresses (`host:port`, comma-separated), tried in turn.
    #[arg(long, env = "PG_ROUTER_CONTROL", default_value = "127.0.0.1:7432", value_delimiter = ',')]
    pub control: Vec<String>,
    /// Bearer token for writes (or set PG_ROUTER_CONTROL_TOKEN).
    #[arg(long, env = "PG_ROUTER_CONTROL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Subcommand, Debug)]
pub enum CtlCommand {
    /// Members, leader, term and log positions, as seen by the node that answers.
    Cluster,
    /// The whole catalog (linearizable read).
    Catalog,
    /// The VSchema.
    Vschema,
    /// Replace the VSchema with a file (TOML, or JSON if it ends in .json).
    ApplyVschema { file: PathBuf },
    /// Replace the shard map with a file (TOML, or JSON if it ends in .json).
    ApplyShardMap { file: PathBuf },
    /// Add a shard, or move an existing one to a new address.
    AddShard { name: String, addr: String },
    /// Remove a shard the shard map no longer uses.
    RemoveShard { name: String },
    /// Refuse writes to a keyspace (INSERT/UPDATE/DELETE/DDL; 25006).
    WriteBlock { keyspace: String },
    /// Allow writes to a keyspace again.
    WriteUnblock { keyspace: String },
    /// Routers and the routing version each serves with.
    Routers,
    /// Add a node as a learner (it receives the log but does not vote).
    AddLearner { id: u64, addr: String },
    /// Set the voters (ids, comma-separated); learners named here are promoted, voters left out
    /// are removed.
    SetVoters {
        #[arg(value_delimiter = ',')]
        ids: Vec<u64>,
    },
}

/// Runs a control node until SIGINT/SIGTERM.
pub async fn run_control(
    args: ControlArgs,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let node = ControlNode::start(NodeOptions {
        id: args.id,
        data_dir: args.data_dir.clone(),
        listen: args.listen,
        advertise: args.advertise.clone(),
        token: Some(args.token.clone()),
        limits: control::api::ApiLimits::default(),
    })
    .await
    .with_context(|| format!("starting control node {} in {}", args.id, args.data_dir.display()))?;
    if !args.init.is_empty() && !node.raft.is_initialized().await? {
        let mut members = BTreeMap::new();
        for m in &args.init {
            let (id, addr) =
                m.split_once('=').with_context(|| format!("--init {m:?}: expected id=host:port"))?;
            let id: u64 = id.parse().with_context(|| format!("--init {m:?}: bad node id"))?;
            members.insert(id, openraft_node(addr));
        }
        node.raft.initialize(members).await.context("initializing the control cluster")?;
        tracing::info!("control cluster initialized");
    }
    if let Some(path) = &args.bootstrap {
        let routing = load_routing(path)?;
        let client = AdminClient::new(vec![node.addr().to_string()], Some(args.token.clone()));
        let outcome: control::Outcome = client
            .send(Method::POST, "/v1/bootstrap", &routing)
            .await
            .map_err(|e| anyhow::anyhow!("bootstrapping the catalog: {e}"))?;
        tracing::info!(%outcome, "catalog bootstrap");
    }
    stop.await;
    node.shutdown().await;
    Ok(())
}

fn openraft_node(addr: &str) -> control::BasicNode {
    control::BasicNode { addr: addr.to_owned() }
}

/// The routing sections of a router config file (or a file with just them).
fn load_routing(path: &Path) -> anyhow::Result<control::RoutingDoc> {
    #[derive(serde::Deserialize)]
    struct Shard {
        name: String,
        host: String,
        port: u16,
    }
    #[derive(serde::Deserialize)]
    struct File {
        vschema: vindex::VSchema,
        shard_map: vindex::ShardMapDoc,
        shards: Vec<Shard>,
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: toml::Value = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let mut table = value.as_table().cloned().unwrap_or_default();
    table.retain(|k: &str, _| matches!(k, "vschema" | "shard_map" | "shards"));
    let f: File =
        toml::Value::Table(table).try_into().with_context(|| format!("reading {}", path.display()))?;
    Ok(control::RoutingDoc {
        vschema: f.vschema,
        shard_map: f.shard_map,
        shards: f
            .shards
            .into_iter()
            .map(|s| (s.name, ShardEndpoint { host: s.host, port: s.port }))
            .collect(),
    })
}

fn read_doc<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    } else {
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// Runs one `ctl` command and prints the answer as JSON.
pub async fn run_ctl(args: CtlArgs) -> anyhow::Result<()> {
    let client = AdminClient::new(args.control.clone(), args.token.clone());
    let answer: serde_json::Value = match args.command {
        CtlCommand::Cluster => client.get("/v1/cluster").await,
        CtlCommand::Catalog => client.get("/v1/catalog").await,
        CtlCommand::Vschema => client.get("/v1/vschema").await,
        CtlCommand::Routers => client.get("/v1/routers").await,
        CtlCommand::ApplyVschema { file } => {
            let v: vindex::VSchema = read_doc(&file)?;
            client.send(Method::PUT, "/v1/vschema", &v).await
        }
        CtlCommand::ApplyShardMap { file } => {
            let m: vindex::ShardMapDoc = read_doc(&file)?;
            client.send(Method::PUT, "/v1/shard_map", &m).await
        }
        CtlCommand::AddShard { name, addr } => {
            let (host, port) =
                addr.rsplit_once(':').with_context(|| format!("{addr:?}: expected host:port"))?;
            let port: u16 = port.parse().with_context(|| format!("{addr:?}: bad port"))?;
            let ep = ShardEndpoint { host: host.to_owned(), port };
            client.send(Method::PUT, &format!("/v1/shards/{name}"), &ep).await
        }
        CtlCommand::RemoveShard { name } => {
            client.call(Method::DELETE, &format!("/v1/shards/{name}"), None).await
        }
        CtlCommand::WriteBlock { keyspace } => {
            client.send(Method::POST, "/v1/write_block", &WriteBlock { keyspace, blocked: true }).await
        }
        CtlCommand::WriteUnblock { keyspace } => {
            client.send(Method::POST, "/v1/write_block", &WriteBlock { keyspace, blocked: false }).await
        }
        CtlCommand::AddLearner { id, addr } => {
            client.send(Method::POST, "/v1/members/learners", &AddLearner { id, addr }).await
        }
        CtlCommand::SetVoters { ids } => {
            let voters: BTreeSet<u64> = ids.into_iter().collect();
            client.send(Method::POST, "/v1/members/voters", &SetVoters { voters }).await
        }
    }
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
    Ok(())
}
