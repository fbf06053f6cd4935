//! The PostgreSQL v3 wire protocol, as far as the router needs it.
//!
//! Three layers, kept apart (as rust-postgres splits `postgres-protocol` from its tokio codec):
//! - [`frame`]: the 5-byte-header framer. It splits a byte buffer into whole frames without
//!   looking inside them and enforces the configured maximum message length before allocating.
//! - [`frontend`]: typed, bounds-checked views of the few client messages the router must look
//!   into (Query, Parse, Bind, Describe, Close) plus the untagged startup packets. Everything else
//!   is forwarded as raw bytes.
//! - [`backend`]: encoders for the messages the router itself writes to clients (errors,
//!   ReadyForQuery, synthetic completions) and the tags of the server messages it watches for.
//!
//! pgwire's typed decoders index into the body without length checks (a truncated
//! SASLInitialResponse or Bind panics inside `bytes`), so client input is decoded here with
//! checked reads; pgwire is used for the startup packet and for SCRAM (see `auth.rs`).

pub mod backend;
pub mod frame;
pub mod frontend;

pub use frame::{Frame, FrameError};

#[cfg(test)]
mod fuzz;
