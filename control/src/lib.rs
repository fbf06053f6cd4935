//! pg-router's control plane: a Raft-replicated store of the shard metadata that routers watch.
//!
//! # Layout
//!
//! - `catalog.rs`: what is stored ([`Catalog`]: VSchema, shard map, shard endpoints, write
//!   blocks, router reports, records for 2PC/sagas/resharding) and the [`Command`]s that change
//!   it, validated with the vindex crate's checks;
//! - `types.rs`: the openraft type configuration;
//! - `log_store.rs`: the Raft log and vote in fsynced segment files ([`LogStore`]);
//! - `state_machine.rs`: the applied catalog, snapshots, and the watch channel routers follow
//!   ([`StateMachine`], [`CatalogHandle`]);
//! - `disk.rs`: checksummed record framing and whole-file replacement;
//! - `node.rs`: a running node ([`ControlNode`]): Raft over the store, plus its HTTP API;
//! - `api.rs`: the HTTP+JSON API (Raft RPCs, admin endpoints, the watch stream);
//! - `network.rs`: Raft RPCs to peers; `http.rs`: the HTTP body and client they share.
//!
//! Everything a node keeps lives in `<data dir>/raft/`; see `log_store.rs` for the files and
//! what recovery accepts.

pub mod api;
pub mod catalog;
pub mod client;
mod disk;
pub mod http;
pub mod log_store;
pub mod network;
pub mod node;
pub mod state_machine;
pub mod types;

#[cfg(test)]
mod store_tests;
#[cfg(test)]
pub(crate) mod testing;

use std::io;
use std::path::Path;

pub use catalog::{Catalog, Command, Namespace, Outcome, RouterRecord, RoutingDoc, ShardEndpoint};
pub use log_store::LogStore;
pub use node::{ControlNode, NodeOptions, WriteError};
pub use openraft::BasicNode;
pub use state_machine::{CatalogHandle, StateMachine};
pub use types::{NodeId, Raft, TypeConfig};

/// Opens the log store and the state machine of the node whose data dir is `data_dir`.
pub fn open_store(data_dir: &Path) -> io::Result<(LogStore, StateMachine)> {
    let dir = data_dir.join("raft");
    std::fs::create_dir_all(&dir)?;
    Ok((LogStore::open(&dir)?, StateMachine::open(&dir)?))
}
