//! pg-router distributed transactions: 2PC and saga coordinators as pure state machines.
//!
//! Not built yet: until it is, the router runs every transaction on one shard (1PC).
