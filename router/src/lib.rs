//! pg-router: a proxy that speaks the PostgreSQL wire protocol and spreads tables over shards.
//!
//! Layout:
//! - [`config`]: the TOML file and its validation.
//! - [`server`]: accept loop, connection limit, graceful shutdown.
//! - [`session`]: one task per client: login, routing, frame forwarding, transaction pooling.
//! - [`topology`]: the VSchema, shard map and planner a statement runs against.
//! - [`control`]: the embedded control node or the watch on a remote one; swaps topologies.
//! - [`admin`]: the `pg-router control` and `pg-router ctl` subcommands.
//! - [`exec`]: statements that run on several shards (fan-out and merge).
//! - [`pool`]: backend connections and their pools.
//! - [`protocol`]: framing and the few typed messages the router reads or writes.
//! - [`auth`], [`tls`], [`stream`]: client authentication and encryption.
//! - [`cancel`]: routing CancelRequests to the backend running the query.
//! - [`metrics`], [`error`]: Prometheus metrics and client-facing errors.
//! - [`timer`]: the session runtime (I/O only) and the background thread that owns timers.
//!
//! The data path forwards frames as bytes: rows are never decoded on the single-shard path.

pub mod admin;
pub mod auth;
pub mod cancel;
pub mod config;
pub mod control;
pub mod error;
pub mod exec;
pub mod metrics;
pub mod pool;
pub mod protocol;
pub mod server;
pub mod session;
pub mod stream;
pub mod timer;
pub mod tls;
pub mod topology;
