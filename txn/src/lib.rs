//! pg-router distributed transactions: 2PC and saga coordinators as pure state machines.
//!
//! Not built yet. The design is in `docs/design/transactions.md`. Until it is built, a
//! transaction that wrote on several shards is committed on them one after the other, which is
//! not atomic (see the README).
