//! Running a statement on several shards at once.
//!
//! The single-shard path never comes here: the session forwards frames to one backend. Here a
//! statement fans out to several backends ("legs") concurrently, every leg's replies are read as
//! they arrive, and a [`Combine`] turns them into what one PostgreSQL would have answered:
//! [`merge`] for cross-shard SELECTs (ORDER BY, LIMIT, aggregates, GROUP BY), [`Concat`] for
//! writes (rows concatenated, counts summed), [`First`] for statements that are the same on
//! every shard (DDL, reference-table writes), and [`insert::Reorder`] for a split INSERT.
//!
//! Every leg is read until its ReadyForQuery even after an error or an early LIMIT, so each
//! backend is left in a known state; a leg that breaks the protocol is marked broken and the
//! session drops its connection.

pub mod chunks;
pub mod copy;
pub mod fanout;
pub mod insert;
pub mod merge;

pub use fanout::{fan_out, Combine, Concat, DescribeOnly, First, Leg, LegRequest, Outcome};
