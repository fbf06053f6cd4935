//! Raft RPCs between control nodes: JSON over HTTP/1.1 (`POST /raft/{append,vote,snapshot}`
//! on the peer's API address), authenticated with the cluster token. The answer body is the
//! JSON of the peer's `Result`, so a Raft-level refusal travels back as a remote error while a
//! transport failure is reported as unreachable (openraft backs off and retries).

use std::time::Duration;

use hyper::{Method, StatusCode};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::http::Client;
use crate::types::{NodeId, TypeConfig};

/// Makes a [`Network`] per peer.
pub struct NetworkFactory {
    pub token: Option<String>,
}

/// The connection to one peer.
pub struct Network {
    target: NodeId,
    node: BasicNode,
    client: Client,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Network {
        Network { target, node: node.clone(), client: Client::new(node.addr.clone(), self.token.clone()) }
    }
}

/// The error of a failed RPC that never got a Raft answer.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

impl Network {
    async fn rpc<Req, Resp, E>(
        &mut self,
        path: &str,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let (status, bytes) = match self.client.call(Method::POST, path, Some(body), ttl).await {
            Ok(r) => r,
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(&e))),
        };
        if status != StatusCode::OK {
            let msg = String::from_utf8_lossy(&bytes).into_owned();
            let e = TransportError(format!("{} answered {status}: {msg}", self.node.addr));
            return Err(RPCError::Network(NetworkError::new(&e)));
        }
        let result: Result<Resp, E> =
            serde_json::from_slice(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result
            .map_err(|e| RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e)))
    }
}

impl RaftNetwork<TypeConfig> for Network {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc("/raft/append", &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc("/raft/snapshot", &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc("/raft/vote", &rpc, option.hard_ttl()).await
    }
}
