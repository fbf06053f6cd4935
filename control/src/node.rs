//! A control node: the Raft instance over the on-disk store, and its HTTP API.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::catalog::{Catalog, Command, Outcome, RoutingDoc};
use crate::network::NetworkFactory;
use crate::state_machine::CatalogHandle;
use crate::types::{NodeId, Raft};
use crate::{api, open_store};

/// How to run a control node.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub id: NodeId,
    /// Where the log, vote and snapshots live (`<data_dir>/raft/`).
    pub data_dir: PathBuf,
    /// Address of the HTTP API, which also carries Raft RPCs between nodes.
    pub listen: SocketAddr,
    /// The address peers and clients use to reach this node (default: the bound address).
    pub advertise: Option<String>,
    /// Required on writes and on Raft RPCs; without one, the API refuses every write.
    pub token: Option<String>,
    /// What the API lets its clients hold.
    pub limits: api::ApiLimits,
}

/// Why a write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("this node is not the leader{}", leader.as_ref().map(|l| format!("; the leader is at {l}")).unwrap_or_else(|| ": no leader is elected right now".to_owned()))]
    NotLeader { leader: Option<String> },
    #[error("{0}")]
    Rejected(String),
    #[error("raft: {0}")]
    Raft(String),
}

/// A running control node.
pub struct ControlNode {
    pub id: NodeId,
    pub raft: Raft,
    catalog: CatalogHandle,
    addr: SocketAddr,
    advertise: String,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    /// Held (locked) for the node's lifetime: one process per data dir.
    _lock: std::fs::File,
}

impl ControlNode {
    /// Opens the store in `opts.data_dir`, starts Raft and serves the API on `opts.listen`.
    pub async fn start(opts: NodeOptions) -> io::Result<Self> {
        std::fs::create_dir_all(&opts.data_dir)?;
        let lock_path = opts.data_dir.join("LOCK");
        let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path)?;
        if let Err(e) = lock.try_lock() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("control data dir {} is in use by another process ({e})", opts.data_dir.display()),
            ));
        }
        let (log, sm) = open_store(&opts.data_dir)?;
        let catalog = sm.handle();
        let config = openraft::Config {
            cluster_name: "pg-router-control".into(),
            heartbeat_interval: 100,
            election_timeout_min: 500,
            election_timeout_max: 1000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(500),
            max_in_snapshot_log_to_keep: 100,
            ..Default::default()
        }
        .validate()
        .map_err(io::Error::other)?;
        let raft =
            Raft::new(opts.id, Arc::new(config), NetworkFactory { token: opts.token.clone() }, log, sm)
                .await
                .map_err(io::Error::other)?;
        let listener = TcpListener::bind(opts.listen).await?;
        let addr = listener.local_addr()?;
        let advertise = opts.advertise.clone().unwrap_or_else(|| addr.to_string());
        let (stop, stopped) = oneshot::channel();
        let state = Arc::new(api::State {
            id: opts.id,
            raft: raft.clone(),
            catalog: catalog.clone(),
            token: opts.token.clone(),
        });
        let server = tokio::spawn(api::serve(listener, state, opts.limits, stopped));
        tracing::info!(id = opts.id, %addr, advertise, "control node started");
        Ok(Self {
            id: opts.id,
            raft,
            catalog,
            addr,
            advertise,
            stop: Some(stop),
            server: Some(server),
            _lock: lock,
        })
    }

    /// The bound API address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Reads and watches the catalog applied on this node.
    #[must_use]
    pub fn catalog(&self) -> &CatalogHandle {
        &self.catalog
    }

    /// Embedded mode: makes this node a one-member cluster if it has never been initialized,
    /// waits until it leads, and proposes `routing` as the first catalog (a no-op if a catalog
    /// exists: a restarted node keeps what it has, whatever the config file says now).
    pub async fn bootstrap_single(&self, routing: RoutingDoc) -> Result<Catalog, WriteError> {
        let initialized = self.raft.is_initialized().await.map_err(|e| WriteError::Raft(e.to_string()))?;
        if !initialized {
            let members = BTreeMap::from([(self.id, BasicNode { addr: self.advertise.clone() })]);
            self.raft.initialize(members).await.map_err(|e| WriteError::Raft(e.to_string()))?;
        }
        self.raft
            .wait(Some(Duration::from_secs(30)))
            .current_leader(self.id, "embedded control node leads")
            .await
            .map_err(|e| WriteError::Raft(e.to_string()))?;
        match self.write(Command::Bootstrap { routing }).await? {
            Outcome::Rejected { reason } => Err(WriteError::Rejected(reason)),
            _ => Ok(self.catalog.catalog()),
        }
    }

    /// Proposes `cmd` through Raft on this node, which must be the leader. Commands that would
    /// be rejected are answered without touching the log.
    pub async fn write(&self, cmd: Command) -> Result<Outcome, WriteError> {
        write(&self.raft, &self.catalog, cmd).await
    }

    /// Stops the API and Raft.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(s) = self.server.take() {
            let _ = s.await;
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "control node shutdown");
        }
    }
}

/// Proposes `cmd` through `raft` after checking it against the applied catalog.
pub async fn write(raft: &Raft, catalog: &CatalogHandle, cmd: Command) -> Result<Outcome, WriteError> {
    if let Outcome::Rejected { reason } = catalog.catalog().apply(&cmd) {
        return Err(WriteError::Rejected(reason));
    }
    match raft.client_write(cmd).await {
        Ok(resp) => match resp.data {
            Outcome::Rejected { reason } => Err(WriteError::Rejected(reason)),
            other => Ok(other),
        },
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(WriteError::NotLeader { leader: f.leader_node.map(|n| n.addr) })
        }
        Err(e) => Err(WriteError::Raft(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;
    use crate::testing::TempDir;

    /// Everything the server sends until it closes the connection.
    async fn until_closed(s: &mut TcpStream) -> String {
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "the server kept the connection open");
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn the_api_refuses_connections_past_its_limit_and_closes_stalled_ones() {
        let dir = TempDir::new("api-limits");
        let short = Duration::from_millis(300);
        let node = ControlNode::start(NodeOptions {
            id: 1,
            data_dir: dir.path().to_owned(),
            listen: "127.0.0.1:0".parse().unwrap(),
            advertise: None,
            token: None,
            limits: api::ApiLimits {
                max_connections: 2,
                header_read_timeout: short,
                body_read_timeout: short,
            },
        })
        .await
        .unwrap();
        let addr = node.addr();
        // One client stops halfway through its headers, another after headers that promise a
        // body: together they hold both connections.
        let mut headers = TcpStream::connect(addr).await.unwrap();
        headers.write_all(b"GET /v1/cluster HTTP/1.1\r\nhost: x\r\n").await.unwrap();
        let mut body = TcpStream::connect(addr).await.unwrap();
        body.write_all(b"GET /v1/cluster HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n").await.unwrap();
        // A third is answered at once and closed.
        let mut third = TcpStream::connect(addr).await.unwrap();
        let reply = until_closed(&mut third).await;
        assert!(reply.starts_with("HTTP/1.1 503 "), "{reply}");
        assert!(reply.ends_with(r#"{"error":"too many connections to this control API"}"#), "{reply}");
        // The stalled ones are let go when their time is up.
        let _ = until_closed(&mut headers).await;
        let reply = until_closed(&mut body).await;
        assert!(reply.starts_with("HTTP/1.1 408 "), "{reply}");
        // With the slots free again, requests are served; an idle keep-alive connection is
        // closed after the header timeout too.
        let mut c = crate::http::Client::new(addr.to_string(), None);
        let (status, _) =
            c.call(hyper::Method::GET, "/v1/cluster", None, Duration::from_secs(5)).await.unwrap();
        assert_eq!(status, hyper::StatusCode::OK);
        let mut kept = TcpStream::connect(addr).await.unwrap();
        kept.write_all(b"GET /v1/cluster HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let reply = until_closed(&mut kept).await;
        assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
        // A watch stream is a response being written, not a wait for headers: its keep-alive
        // lines (the first after WATCH_KEEPALIVE, well past the timeout) keep coming.
        let mut watch = TcpStream::connect(addr).await.unwrap();
        watch.write_all(b"GET /v1/watch?after=0 HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut got = Vec::new();
        let keepalive_chunk = b"\r\n1\r\n\n\r\n";
        while !got.windows(keepalive_chunk.len()).any(|w| w == keepalive_chunk) {
            let mut buf = [0u8; 256];
            let wait = api::WATCH_KEEPALIVE + Duration::from_secs(3);
            let n = tokio::time::timeout(wait, watch.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "the watch stream was closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        node.shutdown().await;
    }
}
