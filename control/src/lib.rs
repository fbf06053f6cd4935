//! pg-router control plane: the Raft-replicated shard-metadata store and its admin API.
//!
//! Not built yet: until it is, the shard list comes from the router's config file.
