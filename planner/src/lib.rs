//! pg-router planner: SQL text + VSchema → [`Plan`] (pure, no IO, no async).
//!
//! # Layout
//! `plan.rs` is the plan tree and the executor's contract (read it first); `planner.rs` is the
//! entry point ([`Planner`]: routing hints, `SHOW ROUTE FOR`, several statements in one text,
//! the fallback for what sqlparser rejects); `statement.rs` plans one parsed statement;
//! `parse.rs` is the only module that touches sqlparser's parser, plus a small lexer;
//! `analyze.rs` resolves tables and extracts sharding-key predicates and co-located joins
//! (`expr.rs`: name and expression helpers, key values from literals);
//! `rewrite.rs` produces per-shard SQL and the merge spec of multi-shard SELECTs; `explain.rs`
//! the stable text form used by `SHOW ROUTE FOR` and the golden tests in `testdata/`;
//! `cache.rs` the plan cache; `error.rs` the one error type ([`PlanError`]).
//!
//! # Guarantee
//! The planner never produces a plan that gives a silently wrong answer: when it cannot prove a
//! shape correct it returns [`PlanError::Unsupported`] (SQLSTATE 0A000) with the reason.
//!
//! # Decisions and known limitations
//! - Key values: literals are converted to the vindex's column type at plan time; a quoted
//!   literal PostgreSQL itself would reject (`int_key = 'abc'`) is an error (22P02 / 42883);
//!   a number that is not an integer of the column, literal forms vindex cannot read, and
//!   timestamps whose reading depends on the session TimeZone are simply not used for routing.
//! - INSERT into a sharded table needs the sharding key as a literal or `$n` in every row,
//!   unless the table's `auto_increment` column is the key and the INSERT leaves it out (the
//!   router then fills it from the sequence, see [`AutoFill`]).
//! - Lookup vindexes route when no cheaper vindex applies: [`KeyVindex::lookup_keyspace`] names
//!   the unsharded keyspace holding the lookup table (checked by [`Planner::new`]), and the
//!   router reads it at run time. An INSERT into a lookup vindex's owner table carries the
//!   lookup rows to add ([`LookupWrite`]); the indexed column must then be a literal, `$n` or
//!   NULL in every row. UPDATE of a vindex column is refused; DELETE leaves lookup rows behind
//!   (the router treats them as stale).
//! - Only PostgreSQL's built-in aggregates are recognized: a user-defined aggregate in a
//!   multi-shard SELECT is treated as a plain function (per-shard value passed through).
//! - Statements without tables ([`Target::Any`]) are run by the router on the default
//!   keyspace's shard, so functions with side effects (`nextval`) act on one server.
//! - Reference-table reads use [`Target::AnyOf`] (any shard of the table's keyspace).
//! - DDL goes to the keyspaces of the tables it names (the default keyspace for unknown names,
//!   every keyspace when it names none, e.g. `DROP INDEX`, `CREATE FUNCTION`); views over
//!   sharded tables are created on every shard of that keyspace, but queries on the view are
//!   routed by the view's name (not in the VSchema: default keyspace).
//! - A bare column in a join resolves only when exactly one relation of the block has a vindex
//!   on it, so `JOIN … USING (k) WHERE k = 1` scatters (correct, not pruned).
//! - Schema-qualified names are looked up by their last part (`anything.users` = `users`),
//!   except `pg_catalog` / `information_schema`.
//!
//! # Golden tests
//! `testdata/cases.json` (`{comment, sql, plan}`, `plan` = [`Plan::explain`]) and
//! `testdata/unsupported_cases.json` (`{sql, error}`, `error` = `"<SQLSTATE> <message>"`) are
//! planned against `testdata/vschema.toml` with default keyspace `main` by
//! `tests/golden.rs`. After an intended change, regenerate them with
//! `UPDATE_GOLDEN=1 cargo test -p planner --test golden` and review the diff.
//!
//! ```
//! use std::sync::Arc;
//! use planner::{Planner, PlannerOptions};
//!
//! let vschema = vindex::VSchema::from_toml(r#"
//! [keyspaces.main]
//! [keyspaces.commerce]
//! sharded = true
//! vindexes.hash_id = { type = "hash", params = { column_type = "int" } }
//! tables.users = { column_vindexes = [{ column = "id", vindex = "hash_id" }] }
//! "#).unwrap().validate().unwrap();
//! let options = PlannerOptions { default_keyspace: Some("main".into()), ..Default::default() };
//! let planner = Planner::new(Arc::new(vschema), options).unwrap();
//! let plan = planner.plan("SELECT * FROM users WHERE id = $1").unwrap();
//! assert_eq!(plan.explain(), "Route keys keyspace=commerce vindex=hash_id(users.id) values=[$1] class=select params=1\n");
//! ```

mod analyze;
mod cache;
mod copy;
pub mod error;
mod explain;
mod expr;
mod parse;
pub mod plan;
mod planner;
mod rewrite;
mod statement;

pub use error::PlanError;
pub use plan::*;
pub use planner::{Planner, PlannerOptions};

#[cfg(test)]
mod tests;
