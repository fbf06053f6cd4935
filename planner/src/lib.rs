//! pg-router planner: SQL text + VSchema → `Plan` (pure, no IO).
//!
//! Not built yet: until it is, the router sends every statement to the first shard (see the
//! README's "Status" section).
