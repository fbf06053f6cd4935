//! The HTTP+JSON API of a control node: Raft RPCs between nodes, the admin API, and the watch
//! stream routers follow. The reference is in the README ("Control plane").
//!
//! Writes and Raft RPCs need `Authorization: Bearer <token>`; reads do not (the catalog holds no
//! secrets). A write sent to a follower is answered `421` with the leader's address, which the
//! admin client follows. Catalog reads are linearizable (the node confirms it still leads and
//! has applied everything committed before it answers) unless `?stale=1` asks for the local copy.

// Helpers return `Result<_, Response<Body>>` so an early error is the response itself; the size
// of that value is irrelevant at one response per request.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::catalog::{Catalog, Command, RouterRecord, RoutingDoc, ShardEndpoint};
use crate::http::{error, json, Body};
use crate::node::{write, WriteError};
use crate::state_machine::CatalogHandle;
use crate::types::{NodeId, Raft};

/// Request bodies larger than this are refused.
const MAX_BODY: usize = 16 << 20;
/// A watch stream sends a blank line this often so both ends notice a dead connection.
pub const WATCH_KEEPALIVE: Duration = Duration::from_secs(2);

pub(crate) struct State {
    pub id: NodeId,
    pub raft: Raft,
    pub catalog: CatalogHandle,
    pub token: Option<String>,
}

/// One line of the watch stream: a routing version as routers apply it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WatchEvent {
    pub version: u64,
    pub routing: RoutingDoc,
    pub write_blocked: BTreeSet<String>,
}

impl WatchEvent {
    #[must_use]
    pub fn of(c: &Catalog) -> Self {
        Self { version: c.version, routing: c.routing(), write_blocked: c.write_blocked.clone() }
    }
}

/// `POST /v1/write_block`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteBlock {
    pub keyspace: String,
    pub blocked: bool,
}

/// `POST /v1/members/learners`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddLearner {
    pub id: NodeId,
    pub addr: String,
}

/// `POST /v1/members/voters`: the complete new voter set.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetVoters {
    pub voters: BTreeSet<NodeId>,
}

/// `POST /v1/init`: the initial members (id → address).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Init {
    pub members: BTreeMap<NodeId, String>,
}

/// `GET /v1/cluster`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub id: NodeId,
    pub state: String,
    pub leader: Option<NodeId>,
    pub leader_addr: Option<String>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub voters: BTreeSet<NodeId>,
    /// Every member, voter or learner: id → address.
    pub nodes: BTreeMap<NodeId, String>,
    pub catalog_version: u64,
}

pub use crate::http::ApiLimits;

pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    limits: ApiLimits,
    stop: oneshot::Receiver<()>,
) {
    let stop = async move {
        let _ = stop.await;
    };
    crate::http::serve(listener, limits, "control API", stop, move |req, peer| {
        let state = state.clone();
        async move { route(&state, req, peer, limits.body_read_timeout).await }
    })
    .await;
}

async fn route(
    state: &State,
    req: Request<Incoming>,
    _peer: SocketAddr,
    body_read_timeout: Duration,
) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let needs_token = method != Method::GET;
    if needs_token {
        if let Err(r) = authorize(state, &req) {
            return r;
        }
    }
    let body = match tokio::time::timeout(body_read_timeout, read_body(req)).await {
        Ok(Ok(b)) => b,
        Ok(Err(r)) => return r,
        Err(_) => return error(StatusCode::REQUEST_TIMEOUT, "request body: not received in time"),
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (Method::POST, ["raft", "append"]) => match parse(&body) {
            Ok(rpc) => json(StatusCode::OK, &state.raft.append_entries(rpc).await),
            Err(r) => r,
        },
        (Method::POST, ["raft", "vote"]) => match parse(&body) {
            Ok(rpc) => json(StatusCode::OK, &state.raft.vote(rpc).await),
            Err(r) => r,
        },
        (Method::POST, ["raft", "snapshot"]) => match parse(&body) {
            Ok(rpc) => json(StatusCode::OK, &state.raft.install_snapshot(rpc).await),
            Err(r) => r,
        },
        (Method::GET, ["v1", "cluster"]) => json(StatusCode::OK, &cluster_info(state)),
        (Method::GET, ["v1", "catalog"]) => match read_catalog(state, &query).await {
            Ok(c) => json(StatusCode::OK, &c),
            Err(r) => r,
        },
        (Method::GET, ["v1", "vschema"]) => match read_catalog(state, &query).await {
            Ok(c) => json(StatusCode::OK, &c.vschema),
            Err(r) => r,
        },
        (Method::GET, ["v1", "routers"]) => match read_catalog(state, &query).await {
            Ok(c) => json(StatusCode::OK, &c.routers),
            Err(r) => r,
        },
        (Method::GET, ["v1", "watch"]) => watch(state, query_u64(&query, "after").unwrap_or(0)),
        (Method::PUT, ["v1", "vschema"]) => {
            propose(state, &body, |vschema| Command::SetVSchema { vschema }).await
        }
        (Method::PUT, ["v1", "shard_map"]) => {
            propose(state, &body, |shard_map| Command::SetShardMap { shard_map }).await
        }
        (Method::POST, ["v1", "bootstrap"]) => {
            propose(state, &body, |routing| Command::Bootstrap { routing }).await
        }
        (Method::PUT, ["v1", "routing"]) => {
            propose(state, &body, |routing| Command::SetRouting { routing }).await
        }
        (Method::PUT, ["v1", "shards", name]) => {
            let name = (*name).to_owned();
            propose(state, &body, |endpoint: ShardEndpoint| Command::PutShard { name, endpoint }).await
        }
        (Method::DELETE, ["v1", "shards", name]) => {
            do_write(state, Command::RemoveShard { name: (*name).to_owned() }).await
        }
        (Method::POST, ["v1", "write_block"]) => {
            propose(state, &body, |w: WriteBlock| Command::SetWriteBlock {
                keyspace: w.keyspace,
                blocked: w.blocked,
            })
            .await
        }
        (Method::PUT, ["v1", "routers", id]) => {
            let id = (*id).to_owned();
            propose(state, &body, |record: RouterRecord| Command::ReportRouter { id, record }).await
        }
        (Method::POST, ["v1", "init"]) => match parse::<Init>(&body) {
            Ok(init) => {
                let members: BTreeMap<NodeId, BasicNode> =
                    init.members.into_iter().map(|(id, addr)| (id, BasicNode { addr })).collect();
                match state.raft.initialize(members).await {
                    Ok(()) => json(StatusCode::OK, &cluster_info(state)),
                    Err(e) => error(StatusCode::CONFLICT, e.to_string()),
                }
            }
            Err(r) => r,
        },
        (Method::POST, ["v1", "members", "learners"]) => match parse::<AddLearner>(&body) {
            Ok(l) => membership(state.raft.add_learner(l.id, BasicNode { addr: l.addr }, true).await, state),
            Err(r) => r,
        },
        (Method::POST, ["v1", "members", "voters"]) => match parse::<SetVoters>(&body) {
            Ok(v) if v.voters.is_empty() => error(StatusCode::BAD_REQUEST, "the voter set cannot be empty"),
            Ok(v) => membership(state.raft.change_membership(v.voters, false).await, state),
            Err(r) => r,
        },
        _ => error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
    }
}

fn authorize(state: &State, req: &Request<Incoming>) -> Result<(), Response<Body>> {
    let Some(expected) = &state.token else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "this node has no admin token configured: writes are disabled",
        ));
    };
    let given = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if constant_time_eq(t.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(error(StatusCode::UNAUTHORIZED, "wrong token")),
        None => Err(error(StatusCode::UNAUTHORIZED, "an Authorization: Bearer <token> header is required")),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    match limited.collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) => Err(error(StatusCode::PAYLOAD_TOO_LARGE, format!("request body: {e}"))),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Response<Body>> {
    serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

fn query_u64(query: &str, key: &str) -> Option<u64> {
    query.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

fn cluster_info(state: &State) -> ClusterInfo {
    let m = state.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let nodes: BTreeMap<NodeId, String> = membership.nodes().map(|(id, n)| (*id, n.addr.clone())).collect();
    ClusterInfo {
        id: state.id,
        state: format!("{:?}", m.state),
        leader: m.current_leader,
        leader_addr: m.current_leader.and_then(|l| nodes.get(&l).cloned()),
        term: m.current_term,
        last_log_index: m.last_log_index,
        last_applied: m.last_applied.map(|l| l.index),
        voters: membership.voter_ids().collect(),
        nodes,
        catalog_version: state.catalog.catalog().version,
    }
}

fn not_leader(leader: Option<String>) -> Response<Body> {
    let e = WriteError::NotLeader { leader: leader.clone() };
    match leader {
        Some(l) => {
            json(StatusCode::MISDIRECTED_REQUEST, &serde_json::json!({ "error": e.to_string(), "leader": l }))
        }
        None => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn read_catalog(state: &State, query: &str) -> Result<Catalog, Response<Body>> {
    if query_u64(query, "stale") == Some(1) {
        return Ok(state.catalog.catalog());
    }
    match state.raft.ensure_linearizable().await {
        Ok(_) => Ok(state.catalog.catalog()),
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
            Err(not_leader(f.leader_node.map(|n| n.addr)))
        }
        Err(e) => Err(error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

async fn propose<T: serde::de::DeserializeOwned>(
    state: &State,
    body: &[u8],
    make: impl FnOnce(T) -> Command,
) -> Response<Body> {
    match parse::<T>(body) {
        Ok(v) => do_write(state, make(v)).await,
        Err(r) => r,
    }
}

async fn do_write(state: &State, cmd: Command) -> Response<Body> {
    match write(&state.raft, &state.catalog, cmd).await {
        Ok(outcome) => json(StatusCode::OK, &outcome),
        Err(WriteError::NotLeader { leader }) => not_leader(leader),
        Err(WriteError::Rejected(reason)) => error(StatusCode::BAD_REQUEST, reason),
        Err(e @ WriteError::Raft(_)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

fn membership<E: std::fmt::Display>(result: Result<impl Sized, E>, state: &State) -> Response<Body> {
    match result {
        Ok(_) => json(StatusCode::OK, &cluster_info(state)),
        Err(e) => {
            let m = state.raft.metrics().borrow().clone();
            if m.current_leader != Some(state.id) {
                let leader = m
                    .current_leader
                    .and_then(|l| m.membership_config.membership().get_node(&l).map(|n| n.addr.clone()));
                return not_leader(leader);
            }
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
    }
}

/// Streams a [`WatchEvent`] line for every routing version above `after`, starting with the
/// current one, and a blank line every [`WATCH_KEEPALIVE`].
fn watch(state: &State, after: u64) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let mut sub = state.catalog.subscribe();
    tokio::spawn(async move {
        let mut sent = after;
        loop {
            let current = sub.borrow_and_update().clone();
            if current.version > sent {
                let mut line = serde_json::to_vec(&WatchEvent::of(&current)).unwrap_or_default();
                line.push(b'\n');
                if tx.send(Bytes::from(line)).await.is_err() {
                    return;
                }
                sent = current.version;
            }
            tokio::select! {
                changed = sub.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(WATCH_KEEPALIVE) => {
                    if tx.send(Bytes::from_static(b"\n")).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut r = Response::new(Body::Stream(rx));
    r.headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/x-ndjson"));
    r
}
