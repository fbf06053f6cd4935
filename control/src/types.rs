//! The Raft type configuration of the control store.

use std::io::Cursor;

use crate::catalog::{Command, Outcome};

/// Control nodes are numbered; the number is fixed for a node's lifetime.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Raft types of the control store: log entries carry catalog [`Command`]s, applying one
    /// answers an [`Outcome`], snapshots are the catalog as JSON bytes.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// A Raft node of the control store.
pub type Raft = openraft::Raft<TypeConfig>;
