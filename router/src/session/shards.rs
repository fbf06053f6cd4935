//! The backends a session holds, one per shard its transaction touched.
//!
//! Frames go to one "active" backend at a time, so the pending-reply queue stays a single
//! ordered list. Moving to another shard ([`Session::activate`]) first lets the active backend
//! answer everything outstanding: an extended-protocol batch in flight gets a Sync of the
//! router's own (its ReadyForQuery is hidden), which is where PostgreSQL would have committed
//! the implicit transaction anyway. A shard that joins an open transaction block gets the
//! block's BEGIN first; COMMIT/ROLLBACK end the transaction on the other shards before the
//! client's own COMMIT goes to the active one (one shard after the other: atomic commit across
//! shards is the transaction coordinator's job, see the README).

use std::time::Instant;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;

use super::{backend_error, checkout_error, settings_sql, Deferred, End, Session, Stop};
use crate::config::PoolMode;
use crate::error::{sqlstate, ClientError};
use crate::exec::{Leg, Outcome};
use crate::pool::{BackendConn, PoolKey, Pooled, Settings};
use crate::protocol::backend::{self, TxStatus};
use crate::protocol::frontend;
use crate::session::pending::Expect;
use crate::topology::Endpoint;

impl Session {
    /// The endpoint for a statement that can run anywhere: the active backend's, another held
    /// one's, or the default shard.
    pub(super) fn preferred(&self) -> Endpoint {
        if self.backend.is_some() {
            return self.endpoint;
        }
        self.others.first().map(|(e, _)| *e).unwrap_or_else(|| self.topology.default_endpoint())
    }

    /// Checks out a backend of `endpoint` with the client's session settings applied.
    pub(super) async fn checkout(&mut self, endpoint: Endpoint) -> Result<Pooled, ClientError> {
        if self.pools.get(endpoint).is_none_or(Option::is_none) {
            self.add_pool(endpoint)?;
        }
        let Some(Some((pool, key))) = self.pools.get(endpoint) else {
            return Err(ClientError::new("routing", sqlstate::INTERNAL_ERROR, "pg-router: no pool"));
        };
        let now = Instant::now();
        let mut conn = match self.shared.pools.try_checkout(pool, now) {
            Some(c) => c,
            None => self.shared.pools.checkout(pool, key, now).await.map_err(checkout_error)?,
        };
        self.shared.metrics.transactions.increment(1);
        if conn.settings != self.settings {
            let sql = settings_sql(&conn.settings, &self.settings);
            if let Err(e) = conn.run_internal(&sql).await {
                // The client's setting is invalid on the shard (or the shard failed): drop the
                // connection and forget the settings so the next statement can run.
                let _ = Pooled::take(conn);
                self.settings = Settings::default();
                return Err(
                    backend_error(e).with_hint("The session settings were reset to the server defaults.")
                );
            }
            conn.settings = self.settings.clone();
        }
        Ok(conn)
    }

    /// Makes this client's pool for `endpoint` (its database and backend user on that shard).
    fn add_pool(&mut self, endpoint: Endpoint) -> Result<(), ClientError> {
        let first = self.pools.iter().flatten().next().map(|(_, k)| k.clone());
        let Some(template) = first else {
            return Err(ClientError::new("routing", sqlstate::INTERNAL_ERROR, "pg-router: no pool"));
        };
        let key = PoolKey { shard: endpoint, ..template };
        let Some(pool) = self.shared.pools.pool(&key, self.backend_password.as_deref()) else {
            return Err(ClientError::new(
                "routing",
                sqlstate::INTERNAL_ERROR,
                format!("pg-router: shard endpoint {endpoint} does not exist"),
            ));
        };
        if self.pools.len() <= endpoint {
            self.pools.resize(endpoint + 1, None);
        }
        self.pools[endpoint] = Some((pool, key));
        Ok(())
    }

    /// Makes `endpoint`'s backend the active one, or reports why not (an error the client
    /// has been sent; `extended` says how). Returns false when refused.
    pub(super) async fn enter(&mut self, endpoint: Endpoint, extended: bool) -> Result<bool, End> {
        if let Some(entered) = self.enter_now(endpoint, extended) {
            return entered;
        }
        // The waiting path is boxed: its future (checkout, settings replay, drain) is large and
        // would otherwise take room in every caller's future, and so in every session.
        let activated = Box::pin(self.activate(endpoint)).await;
        self.entered(activated, extended)
    }

    /// [`Session::enter`] when nothing has to wait ([`Session::activate_now`]); `None`, having
    /// changed nothing, when `enter` has to. Callers on the common path try this first and
    /// skip building the asynchronous call.
    pub(super) fn enter_now(&mut self, endpoint: Endpoint, extended: bool) -> Option<Result<bool, End>> {
        self.activate_now(endpoint).then(|| self.entered(Ok(()), extended))
    }

    fn entered(&mut self, activated: Result<(), Stop>, extended: bool) -> Result<bool, End> {
        match activated {
            Ok(()) if self.client_skip && extended => {
                // An earlier message failed: PostgreSQL skips to Sync, so these never ran.
                self.drop_deferred();
                Ok(false)
            }
            Ok(()) => {
                self.flush_deferred();
                Ok(true)
            }
            Err(Stop::Refuse(e)) => {
                self.refuse_deferred();
                self.refuse(e, extended);
                Ok(false)
            }
            Err(Stop::End(e)) => Err(e),
        }
    }

    /// [`Session::activate`] when nothing has to wait: `endpoint`'s backend is already the
    /// active one, or the session holds no backend, is between transactions, and the pool has
    /// an idle connection that can serve as it is with the client's settings. Returns false,
    /// having changed nothing, for everything else. The common statement takes this path, which
    /// skips the asynchronous checkout's machinery.
    fn activate_now(&mut self, endpoint: Endpoint) -> bool {
        if self.backend.is_some() {
            return self.endpoint == endpoint;
        }
        if !self.others.is_empty() || self.client_skip || self.tx != TxStatus::Idle {
            return false;
        }
        let Some(Some((pool, _))) = self.pools.get(endpoint) else { return false };
        let now = Instant::now();
        let Some(conn) = self.shared.pools.try_checkout(pool, now) else { return false };
        if conn.settings != self.settings {
            // Replaying the settings means a round trip: the asynchronous path does it.
            Pooled::release_at(conn, now);
            return false;
        }
        self.shared.metrics.transactions.increment(1);
        self.backend = Some(conn);
        self.endpoint = endpoint;
        self.set_cancel_target();
        // The round trip starts now (what the caller sends next is its first message): one
        // clock reading serves the checkout and the latency histogram.
        if self.pending.is_empty() && self.round_started.is_none() {
            self.round_started = Some(now);
        }
        true
    }

    async fn activate(&mut self, endpoint: Endpoint) -> Result<(), Stop> {
        if self.backend.is_some() && self.endpoint == endpoint {
            return Ok(());
        }
        // Replies still due may carry an error (or the end of the transaction): read them
        // before deciding on the transaction's state.
        self.drain().await?;
        if self.client_skip {
            return Ok(());
        }
        if self.tx == TxStatus::Failed && self.backend.is_some() {
            // Stay on the shard whose transaction failed: it answers 25P02 as PostgreSQL would.
            return Ok(());
        }
        if self.tx == TxStatus::Failed {
            return Err(Stop::Refuse(aborted()));
        }
        if let Some(b) = self.backend.take() {
            self.others.push((self.endpoint, b));
        }
        if let Some(i) = self.others.iter().position(|(e, _)| *e == endpoint) {
            let (_, b) = self.others.swap_remove(i);
            self.backend = Some(b);
            self.endpoint = endpoint;
            self.sync_settings();
        } else {
            let conn = self.checkout(endpoint).await?;
            self.backend = Some(conn);
            self.endpoint = endpoint;
            if self.tx != TxStatus::Idle {
                let begin = self.begin_sql();
                let mut out = BytesMut::new();
                frontend::encode_query(&mut out, &begin);
                self.send(&out, Some(Expect::HiddenQuery));
            }
        }
        self.set_cancel_target();
        Ok(())
    }

    /// A held backend missed a SET made on another shard of this transaction: replay it.
    fn sync_settings(&mut self) {
        let Some(b) = self.backend.as_mut() else { return };
        if b.settings == self.settings {
            return;
        }
        let sql = settings_sql(&b.settings, &self.settings);
        b.settings = self.settings.clone();
        let mut out = BytesMut::new();
        frontend::encode_query(&mut out, &sql);
        self.send(&out, Some(Expect::HiddenQuery));
    }

    /// Waits until the active backend has answered everything sent to it.
    pub(super) async fn drain(&mut self) -> Result<(), End> {
        if self.backend.is_none() {
            return Ok(());
        }
        // An error already read means the backend skipped to this Sync: the client's messages
        // after it must be skipped too.
        let skipping = self.unsynced && self.pending.is_skipping();
        if self.unsynced {
            let mut out = BytesMut::new();
            frontend::encode_sync(&mut out);
            self.send(&out, Some(Expect::HiddenSync));
            self.unsynced = false;
        }
        while !self.pending.is_empty() {
            self.flush().await?;
            let Some(b) = self.backend.as_mut() else { break };
            let b = &mut **b;
            if b.rbuf.capacity() - b.rbuf.len() < 4096 {
                b.rbuf.reserve(16 * 1024);
            }
            let r = b.stream.read_buf(&mut b.rbuf).await;
            self.on_backend_read(r)?;
            if self.backend_fatal {
                // The FATAL error was queued for the client: deliver it, then end.
                let _ = self.flush().await;
                return Err(End::ClientGone);
            }
        }
        if self.pending.take_error_before_hidden_sync() || skipping {
            self.client_skip = true;
        }
        Ok(())
    }

    /// Sends the Parses that waited for this batch's shard to the active backend.
    pub(super) fn flush_deferred(&mut self) {
        if self.deferred.is_empty() || self.backend.is_none() {
            return;
        }
        // Drained rather than dropped: the next batch reuses the allocation.
        let mut deferred = std::mem::take(&mut self.deferred);
        for d in deferred.drain(..) {
            match d {
                Deferred::Named { def, client_name } => {
                    let Some(b) = self.backend.as_mut() else { return };
                    if b.prepared.contains(&def.id) {
                        let mut out = BytesMut::new();
                        backend::parse_complete(&mut out);
                        self.synthetic(out.freeze());
                    } else {
                        b.prepared.insert(def.id);
                        let mut out = BytesMut::new();
                        frontend::encode_parse(&mut out, &def.name, &def.query, &def.param_types);
                        self.send(
                            &out,
                            Some(Expect::Parse {
                                def: Some(def),
                                client_name: Some(client_name),
                                hide: false,
                            }),
                        );
                    }
                }
                Deferred::Raw(frame) => {
                    let pid = self.backend.as_ref().map(|b| b.cancel.pid).unwrap_or(0);
                    if let Some(u) = self.unnamed.as_mut() {
                        u.parsed_on = Some((self.endpoint, pid));
                    }
                    self.send(
                        &frame.bytes,
                        Some(Expect::Parse { def: None, client_name: None, hide: false }),
                    );
                }
            }
        }
        self.deferred = deferred;
    }

    /// Forgets Parses that PostgreSQL would have skipped after an error.
    fn drop_deferred(&mut self) {
        for d in std::mem::take(&mut self.deferred) {
            if let Deferred::Named { def, client_name } = d {
                if self.statements.get(&client_name).is_some_and(|x| x.id == def.id) {
                    self.statements.remove(&client_name);
                }
            }
        }
    }

    /// The batch failed before its Parses reached a shard: answer them as PostgreSQL would
    /// have (they were valid SQL to the planner), so the client sees the error in sequence.
    pub(super) fn refuse_deferred(&mut self) {
        for _ in std::mem::take(&mut self.deferred) {
            let mut out = BytesMut::new();
            backend::parse_complete(&mut out);
            self.synthetic(out.freeze());
        }
    }

    /// Collects one backend per endpoint for a fan-out, after everything outstanding on the
    /// active backend has been answered.
    pub(super) async fn take_legs(&mut self, endpoints: &[Endpoint]) -> Result<Vec<Leg>, Stop> {
        self.drain().await?;
        if self.tx == TxStatus::Failed {
            return Err(Stop::Refuse(aborted()));
        }
        if let Some(u) = self.unnamed.as_mut() {
            // Legs parse the unnamed statement themselves.
            u.parsed_on = None;
        }
        if let Some(b) = self.backend.take() {
            self.others.push((self.endpoint, b));
        }
        let mut legs = Vec::with_capacity(endpoints.len());
        for &endpoint in endpoints {
            if let Some(i) = self.others.iter().position(|(e, _)| *e == endpoint) {
                let (_, mut conn) = self.others.swap_remove(i);
                // A SET made on another shard of this transaction is replayed first.
                let settings = (conn.settings != self.settings).then(|| {
                    let sql = settings_sql(&conn.settings, &self.settings);
                    conn.settings = self.settings.clone();
                    sql
                });
                legs.push(Leg { endpoint, conn, begin: None, settings });
                continue;
            }
            match self.checkout(endpoint).await {
                Ok(conn) => {
                    let begin = (self.tx != TxStatus::Idle).then(|| self.begin_sql());
                    legs.push(Leg { endpoint, conn, begin, settings: None });
                }
                Err(e) => {
                    self.return_legs(legs, None);
                    return Err(e.into());
                }
            }
        }
        if let Ok(mut slot) = self.cancel.lock() {
            slot.clear();
            slot.extend(legs.iter().map(|l| l.conn.cancel.clone()));
        }
        Ok(legs)
    }

    /// Takes back the legs of a fan-out: kept while a transaction is open (or in session
    /// pooling), returned to their pools otherwise, closed if broken.
    pub(super) fn return_legs(&mut self, legs: Vec<Leg>, outcome: Option<&Outcome>) {
        let mut abort_leg = false;
        if let Some(o) = outcome {
            self.tx = match (o.status, self.tx) {
                (TxStatus::Failed, _) | (_, TxStatus::Failed) => TxStatus::Failed,
                (TxStatus::InTransaction, _) => TxStatus::InTransaction,
                (TxStatus::Idle, _) if !self.others.is_empty() => self.tx,
                (TxStatus::Idle, _) => TxStatus::Idle,
            };
            if o.errored && self.tx == TxStatus::InTransaction {
                // The router reported an error (a merge failure) while every shard is fine:
                // the transaction is aborted all the same, as on PostgreSQL.
                self.tx = TxStatus::Failed;
                abort_leg = true;
            }
        }
        let keep = self.tx != TxStatus::Idle || self.mode == PoolMode::Session;
        for (i, leg) in legs.into_iter().enumerate() {
            let broken = outcome.is_some_and(|o| o.broken.get(i).copied().unwrap_or(false));
            let begin_not_sent = outcome.is_none() && leg.begin.is_some();
            if broken {
                drop(Pooled::take(leg.conn));
                // Its part of an open block is gone with it.
                self.block_lost |= self.tx != TxStatus::Idle;
            } else if begin_not_sent {
                // Joined the transaction on paper only: it never got the BEGIN, so it must not
                // serve the transaction's next statements.
                drop(leg.conn);
            } else if keep {
                let failed_here = outcome.is_some_and(|o| o.failed == Some(i));
                if failed_here && self.tx == TxStatus::Failed && self.backend.is_none() {
                    self.backend = Some(leg.conn);
                    self.endpoint = leg.endpoint;
                } else {
                    self.others.push((leg.endpoint, leg.conn));
                }
            }
        }
        if self.tx == TxStatus::Idle {
            self.block_ended();
        }
        if abort_leg && self.backend.is_some() {
            // Make the shard that now serves the transaction fail it too, so its next
            // statements get 25P02 and nothing can commit.
            let mut out = BytesMut::new();
            frontend::encode_query(&mut out, ABORT_SQL);
            self.send(&out, Some(Expect::SilentQuery));
        }
        self.set_cancel_target();
    }

    /// Ends the transaction on every held backend except the active one (promoting one to
    /// active if none is). On a failed COMMIT the remaining ones are rolled back and the
    /// shard's error is returned.
    pub(super) async fn finish_others(&mut self, commit: bool) -> Result<(), Stop> {
        self.drain().await?;
        if self.backend.is_none() {
            if let Some((e, b)) = self.others.pop() {
                self.backend = Some(b);
                self.endpoint = e;
            }
        }
        let mut failure: Option<ClientError> = None;
        for (_, mut b) in std::mem::take(&mut self.others) {
            let sql = if commit && failure.is_none() { "COMMIT" } else { "ROLLBACK" };
            match end_transaction(&mut b, sql).await {
                Ok(()) => drop(b),
                Err(e) => {
                    drop(Pooled::take(b));
                    failure.get_or_insert(e);
                }
            }
        }
        self.set_cancel_target();
        match failure {
            None => Ok(()),
            Some(e) => Err(Stop::Refuse(e)),
        }
    }

    /// Hands every backend back to its pool (transaction pooling, between transactions);
    /// `now` is the caller's reading of the clock, if it has one.
    pub(super) fn release_all(&mut self, now: Option<Instant>) {
        if let Some(u) = self.unnamed.as_mut() {
            // The next backend (maybe the same connection, after another client) may hold
            // another unnamed statement.
            u.parsed_on = None;
        }
        let held = self.backend.take().into_iter().chain(self.others.drain(..).map(|(_, b)| b));
        match now {
            Some(now) => held.for_each(|b| Pooled::release_at(b, now)),
            None => held.for_each(drop),
        }
        self.portal_shards.clear();
        self.set_cancel_target();
    }
}

/// Aborts the backend's transaction block (its error is hidden from the client).
const ABORT_SQL: &str =
    "DO $pgr$ BEGIN RAISE EXCEPTION 'pg-router: transaction aborted by an earlier error'; END $pgr$";

/// What PostgreSQL says to a statement in a failed transaction (the router says it when the
/// statement would go to a shard the failed transaction has not touched).
fn aborted() -> ClientError {
    ClientError::new(
        "aborted_transaction",
        sqlstate::IN_FAILED_SQL_TRANSACTION,
        "current transaction is aborted, commands ignored until end of transaction block",
    )
}

/// Runs COMMIT or ROLLBACK on a backend; a shard's error keeps its SQLSTATE.
pub(super) async fn end_transaction(b: &mut BackendConn, sql: &str) -> Result<(), ClientError> {
    match b.run_for_tag(sql).await {
        Ok(tag) if sql == "COMMIT" && tag == "ROLLBACK" => Err(ClientError::new(
            "commit_failed",
            sqlstate::TRANSACTION_ROLLBACK,
            format!("pg-router: shard {} had rolled back its part of the transaction", b.shard),
        )
        .with_detail("Shards that committed before it stay committed; the others were rolled back.")),
        Ok(_) => Ok(()),
        Err(e) => Err(end_error(e, sql)),
    }
}

fn end_error(e: crate::pool::BackendError, sql: &str) -> ClientError {
    match e {
        crate::pool::BackendError::Server { code, message, shard } => {
            ClientError::new("commit_failed", sqlstate::INTERNAL_ERROR, message).with_code(code).with_detail(
                format!(
                    "Reported by shard {shard} during {sql}. Shards that committed before it stay \
                     committed; the others were rolled back."
                ),
            )
        }
        other => {
            ClientError::new("backend_lost", sqlstate::CONNECTION_FAILURE, format!("pg-router: {other}"))
        }
    }
}

/// A CommandComplete + ReadyForQuery pair the router answers by itself.
pub(super) fn complete_and_ready(tag: &str, status: TxStatus) -> bytes::Bytes {
    let mut out = BytesMut::new();
    backend::command_complete(&mut out, tag);
    backend::ready_for_query(&mut out, status);
    out.freeze()
}
