//! Lookup vindexes: routing through a lookup table, and the lookup rows an INSERT into the
//! owner table adds.
//!
//! The lookup table lives on the shard of an unsharded keyspace (the plan names it). The
//! invariant kept is that the table holds *at least* every (value, keyspace id) of a committed
//! owner row: a missing row would hide an owner row from `WHERE col = value`, an extra one only
//! sends the query to a shard that answers nothing for it.
//!
//! - Reads (`WHERE col = v`, `col IN (…)`): the keyspace ids of the values are read from the
//!   table, and the statement goes to their shards (one shard of the keyspace when there are
//!   none: it answers the empty result with the right columns).
//! - INSERT into the owner: the rows are added first, in a transaction of the router's own on
//!   the lookup shard (`lookup_tx`), before the INSERT is sent. Outside a transaction block it
//!   commits before the INSERT runs. Inside one it stays open, holding its rows' locks, and
//!   commits when the client commits, right after the shards: a concurrent INSERT of the same
//!   `lookup_unique` value waits on those locks and then sees the owner row. If the lookup
//!   shard fails between the two commits, the client gets an error saying so.
//! - `lookup_unique`: a value already held for another keyspace id is a duplicate (23505)
//!   when the owner table has a row with that value on that keyspace id's shard; otherwise
//!   the row is stale (its owner row was deleted or never committed) and is taken over.
//! - DELETE of owner rows leaves their lookup rows (stale, see above); UPDATE of a lookup
//!   column is refused by the planner.
//!
//! Reads inside a transaction that added lookup rows go through `lookup_tx`, so they see them.
//! The lookup transaction takes the block's savepoints like a shard does (see [`super::savepoints`]),
//! so `ROLLBACK TO` removes the lookup rows added since the savepoint.

use std::str::FromStr;

use planner::{InsertSplit, KeyExpr, LookupWrite, Target};
use vindex::{KeyspaceId, Lookup, LookupRow, Value};

use super::shards::end_transaction;
use super::{own_statement_error, Session, Stop};
use crate::config::PoolMode;
use crate::error::{sqlstate, ClientError};
use crate::pool::{BackendError, Pooled};
use crate::protocol::backend::TxStatus;
use crate::topology::{BoundParams, Endpoint};

const UNIQUE_VIOLATION: &str = "23505";
const SERIALIZATION_FAILURE: &str = "40001";

fn lookup_error(e: BackendError, what: &str) -> ClientError {
    own_statement_error(e, "lookup", &format!("Reported by shard {{shard}} while pg-router {what}."))
}

fn bad_row(table: &str) -> ClientError {
    ClientError::new(
        "lookup",
        sqlstate::INTERNAL_ERROR,
        format!("pg-router: lookup table {table} returned a keyspace id that is not 8 bytes"),
    )
}

fn parse_id(hex: Option<&str>, table: &str) -> Result<KeyspaceId, ClientError> {
    hex.filter(|h| h.len() == 16).and_then(|h| KeyspaceId::from_str(h).ok()).ok_or_else(|| bad_row(table))
}

/// A value as PostgreSQL prints it in a duplicate-key detail.
fn shown(v: &Value) -> String {
    match v {
        Value::Text(s) => s.clone(),
        other => other.to_string().trim_matches('\'').to_owned(),
    }
}

/// What PostgreSQL says of a duplicate key (here: in the lookup table's primary key).
fn duplicate(lookup: &Lookup, column: &str, value: &Value) -> ClientError {
    let table = lookup.table().name();
    let table = table.rsplit('.').next().unwrap_or(&table);
    ClientError::new(
        "lookup",
        UNIQUE_VIOLATION,
        format!("duplicate key value violates unique constraint \"{table}_pkey\""),
    )
    .with_detail(format!("Key ({column})=({}) already exists.", shown(value)))
}

impl Session {
    /// The endpoints a route target resolves to; a lookup vindex's table is asked first.
    pub(super) async fn resolve_target(
        &mut self,
        target: &Target,
        params: Option<&BoundParams<'_>>,
    ) -> Result<Vec<Endpoint>, ClientError> {
        let Target::Keys { keyspace, vindex, values } = target else {
            return self.topology.resolve(target, params, Some(self.preferred()));
        };
        let (Some(place), Some(lookup)) = (&vindex.lookup_keyspace, vindex.vindex.as_lookup()) else {
            return self.topology.resolve(target, params, Some(self.preferred()));
        };
        let mut values = self.topology.key_values(vindex, values, params)?;
        values.retain(|v| !v.is_null());
        values.dedup();
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let place = self.place_endpoint(place)?;
        let sql = lookup.table().ids_literal_sql(&values);
        let found = Box::pin(self.lookup_query(place, &sql, "read a lookup table")).await?.0;
        let table = lookup.table().name();
        let ids = found.iter().map(|h| parse_id(h.as_deref(), &table)).collect::<Result<Vec<_>, _>>()?;
        self.topology.endpoints_of_ids(keyspace, &ids)
    }

    fn place_endpoint(&self, keyspace: &str) -> Result<Endpoint, ClientError> {
        self.topology.keyspace_endpoints(keyspace)?.first().copied().ok_or_else(|| {
            ClientError::new(
                "routing",
                sqlstate::INTERNAL_ERROR,
                format!("pg-router: keyspace {keyspace} has no shard"),
            )
        })
    }

    /// Runs a read on the lookup shard: in the session's lookup transaction if it has one
    /// there (it sees the rows this transaction added), else on a connection of its own.
    async fn lookup_query(
        &mut self,
        endpoint: Endpoint,
        sql: &str,
        what: &str,
    ) -> Result<(Vec<Option<String>>, String), ClientError> {
        if let Some(i) = self.lookup_tx.iter().position(|(e, _)| *e == endpoint) {
            return self.in_lookup_tx(i, sql, what).await;
        }
        let mut conn = self.checkout(endpoint).await?;
        match conn.query_in_transaction(sql).await {
            Ok(r) => Ok(r),
            Err(e) => {
                if !matches!(e, BackendError::Server { .. }) {
                    drop(Pooled::take(conn));
                }
                Err(lookup_error(e, what))
            }
        }
    }

    /// Runs a statement in lookup transaction `i`; on failure the transaction is closed (the
    /// client's statement fails, and with it an open transaction block).
    async fn in_lookup_tx(
        &mut self,
        i: usize,
        sql: &str,
        what: &str,
    ) -> Result<(Vec<Option<String>>, String), ClientError> {
        match self.lookup_tx[i].1.query_in_transaction(sql).await {
            Ok(r) => Ok(r),
            Err(e) => {
                let (_, conn) = self.lookup_tx.swap_remove(i);
                drop(Pooled::take(conn));
                // The block's earlier lookup rows went with it.
                self.block_lost |= self.tx != TxStatus::Idle;
                Err(lookup_error(e, what))
            }
        }
    }

    /// The index in `lookup_tx` of the transaction on `endpoint`, opened if needed.
    async fn open_lookup_tx(&mut self, endpoint: Endpoint) -> Result<usize, ClientError> {
        if let Some(i) = self.lookup_tx.iter().position(|(e, _)| *e == endpoint) {
            return Ok(i);
        }
        let mut conn = self.checkout(endpoint).await?;
        // Inside a block it takes the block's savepoints, so ROLLBACK TO undoes its rows too.
        let begin =
            if self.tx == TxStatus::Idle { "BEGIN".to_owned() } else { self.with_savepoints("BEGIN") };
        if let Err(e) = conn.query_in_transaction(&begin).await {
            drop(Pooled::take(conn));
            return Err(lookup_error(e, "opened a transaction for lookup rows"));
        }
        self.lookup_tx.push((endpoint, conn));
        Ok(self.lookup_tx.len() - 1)
    }

    /// Adds the lookup rows of an INSERT's rows (`keys`: each row's sharding key). Outside a
    /// transaction block they are committed before this returns (or, on failure, rolled
    /// back); inside one, a failure fails the block, whose end rolls them back.
    pub(super) async fn write_lookups(
        &mut self,
        ins: &InsertSplit,
        keys: &[KeyExpr],
        params: Option<&BoundParams<'_>>,
    ) -> Result<(), ClientError> {
        let result = self.add_lookup_rows(ins, keys, params).await;
        if self.tx != TxStatus::Idle {
            return result;
        }
        match result {
            Ok(()) => self.end_lookup_tx(true).await,
            Err(e) => {
                self.drop_lookup_tx();
                Err(e)
            }
        }
    }

    async fn add_lookup_rows(
        &mut self,
        ins: &InsertSplit,
        keys: &[KeyExpr],
        params: Option<&BoundParams<'_>>,
    ) -> Result<(), ClientError> {
        let mut ids = Vec::with_capacity(keys.len());
        for key in keys {
            ids.push(self.topology.keyspace_id(&ins.vindex, key, params)?);
        }
        for write in &ins.lookups {
            let (Some(place), Some(lookup)) =
                (&write.vindex.lookup_keyspace, write.vindex.vindex.as_lookup())
            else {
                continue;
            };
            let values = self.topology.key_values(&write.vindex, &write.values, params)?;
            let rows = lookup.rows(&values, &ids).map_err(|e| {
                ClientError::new("routing", sqlstate::INVALID_TEXT_REPRESENTATION, format!("pg-router: {e}"))
            })?;
            if rows.is_empty() {
                continue;
            }
            if lookup.table().is_unique() {
                // Two new rows with one value: the second would take the first's lookup row
                // over before either owner row exists.
                for (n, row) in rows.iter().enumerate() {
                    if rows[..n].iter().any(|r| r.value == row.value && r.keyspace_id != row.keyspace_id) {
                        return Err(duplicate(lookup, &write.column, &row.value));
                    }
                }
            }
            let place = self.place_endpoint(place)?;
            let i = self.open_lookup_tx(place).await?;
            let sql = lookup.table().insert_literal_sql(&rows);
            self.in_lookup_tx(i, &sql, "added lookup rows").await?;
            if lookup.table().is_unique() {
                self.check_unique(place, lookup, &ins.keyspace, write, &rows).await?;
            }
        }
        Ok(())
    }

    /// After adding rows to a unique table: every value must map to its new row's keyspace id.
    async fn check_unique(
        &mut self,
        place: Endpoint,
        lookup: &Lookup,
        keyspace: &str,
        write: &LookupWrite,
        rows: &[LookupRow],
    ) -> Result<(), ClientError> {
        let table = lookup.table().name();
        let i = self.open_lookup_tx(place).await?;
        let held =
            self.in_lookup_tx(i, &lookup.table().held_literal_sql(rows), "read a lookup table").await?.0;
        let mut existing: Vec<Option<KeyspaceId>> = vec![None; rows.len()];
        for line in held {
            let line = line.unwrap_or_default();
            let (n, hex) = line.split_once(':').ok_or_else(|| bad_row(&table))?;
            let n: usize = n.parse().map_err(|_| bad_row(&table))?;
            let slot = n.checked_sub(1).and_then(|n| existing.get_mut(n)).ok_or_else(|| bad_row(&table))?;
            *slot = Some(parse_id(Some(hex), &table)?);
        }
        for (row, held) in rows.iter().zip(existing) {
            let Some(old) = held.filter(|id| *id != row.keyspace_id) else { continue };
            // Another keyspace id holds the value: a duplicate if its owner row exists.
            let owner_shard = self.topology.endpoints_of_ids(keyspace, &[old])?;
            let check = lookup.table().owner_row_literal_sql(&write.owner, &write.column, &row.value);
            let mut taken = false;
            for endpoint in owner_shard {
                taken |= !self.owner_query(endpoint, &check).await?.is_empty();
            }
            if taken {
                return Err(duplicate(lookup, &write.column, &row.value));
            }
            let i = self.open_lookup_tx(place).await?;
            let sql = lookup.table().take_over_sql(&row.value, old, row.keyspace_id);
            let (_, tag) = self.in_lookup_tx(i, &sql, "took over a stale lookup row").await?;
            if tag != "UPDATE 1" {
                return Err(ClientError::new(
                    "lookup",
                    SERIALIZATION_FAILURE,
                    format!(
                        "pg-router: the lookup row of {} for this value changed concurrently; retry the transaction",
                        write.column
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Runs a read of an owner table on a shard: through the backend the session's
    /// transaction holds there (it sees the transaction's own rows), else on a connection of
    /// its own.
    async fn owner_query(
        &mut self,
        endpoint: Endpoint,
        sql: &str,
    ) -> Result<Vec<Option<String>>, ClientError> {
        let what = "checked an owner table for a lookup value";
        if self.backend.is_some() && self.endpoint == endpoint {
            self.drain().await.map_err(|_| {
                ClientError::new(
                    "backend_lost",
                    sqlstate::CONNECTION_FAILURE,
                    "pg-router: lost a shard connection",
                )
            })?;
        }
        let held = if self.backend.is_some() && self.endpoint == endpoint {
            self.backend.as_mut()
        } else {
            self.others.iter_mut().find(|(e, _)| *e == endpoint).map(|(_, b)| b)
        };
        if let Some(conn) = held {
            return conn.query_in_transaction(sql).await.map(|r| r.0).map_err(|e| lookup_error(e, what));
        }
        let mut conn = self.checkout(endpoint).await?;
        match conn.query_in_transaction(sql).await {
            Ok(r) => Ok(r.0),
            Err(e) => {
                if !matches!(e, BackendError::Server { .. }) {
                    drop(Pooled::take(conn));
                }
                Err(lookup_error(e, what))
            }
        }
    }

    /// Ends a transaction block that added lookup rows (COMMIT or ROLLBACK as the client's own
    /// statement): every shard, the active one included, then the lookup rows. Returns the
    /// command tag for the client; the session is then between transactions.
    pub(super) async fn end_block_with_lookups(&mut self, commit: bool) -> Result<&'static str, Stop> {
        let mut result = self.finish_others(commit).await;
        if let Some(mut b) = self.backend.take() {
            let sql = if commit && result.is_ok() { "COMMIT" } else { "ROLLBACK" };
            match end_transaction(&mut b, sql).await {
                // Session pooling keeps its backend for the whole session.
                Ok(()) if self.mode == PoolMode::Session => self.backend = Some(b),
                Ok(()) => drop(b),
                Err(e) => {
                    drop(Pooled::take(b));
                    if result.is_ok() {
                        result = Err(Stop::Refuse(e));
                    }
                }
            }
        }
        let committed = commit && result.is_ok();
        let lookups = self.end_lookup_tx(committed).await;
        self.tx = TxStatus::Idle;
        self.block_ended();
        if self.mode != PoolMode::Session {
            self.release_all(None);
        }
        result?;
        match lookups {
            Err(e) if committed => Err(Stop::Refuse(e.with_detail(
                "The transaction committed on its shards, but the lookup rows it added were lost: rows it \
                 inserted may not be found by their lookup columns until their lookup rows are added again.",
            ))),
            _ => Ok(if committed { "COMMIT" } else { "ROLLBACK" }),
        }
    }

    /// Commits (or rolls back) the session's lookup transactions. On failure every one is
    /// closed and the first error returned.
    pub(super) async fn end_lookup_tx(&mut self, commit: bool) -> Result<(), ClientError> {
        let mut failure = None;
        for (_, mut conn) in std::mem::take(&mut self.lookup_tx) {
            let sql = if commit && failure.is_none() { "COMMIT" } else { "ROLLBACK" };
            match conn.query_in_transaction(sql).await {
                Ok((_, tag)) if sql == "COMMIT" && tag == "ROLLBACK" => {
                    drop(Pooled::take(conn));
                    failure.get_or_insert(ClientError::new(
                        "commit_failed",
                        sqlstate::TRANSACTION_ROLLBACK,
                        "pg-router: the transaction's lookup rows were rolled back",
                    ));
                }
                Ok(_) => drop(conn),
                Err(e) => {
                    drop(Pooled::take(conn));
                    failure.get_or_insert(lookup_error(e, "ended a transaction of lookup rows"));
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// A transaction ended without passing through COMMIT or ROLLBACK as the router sees them
    /// (e.g. inside a function): its lookup rows are committed now, late but never missing.
    pub(super) async fn settle_lookup_tx(&mut self) {
        if let Err(e) = self.end_lookup_tx(true).await {
            tracing::warn!(code = %e.code, "could not commit lookup rows: {}", e.message);
        }
    }

    /// Closes lookup transactions without waiting (the session is ending abnormally).
    pub(super) fn drop_lookup_tx(&mut self) {
        for (_, conn) in self.lookup_tx.drain(..) {
            drop(Pooled::take(conn));
        }
    }
}
