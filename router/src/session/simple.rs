//! Simple-protocol statements: plan, route, forward or fan out.

use std::sync::Arc;

use bytes::BytesMut;
use planner::{Action, AutoFill, InsertSplit, KeyExpr, Plan, PlanError, Route, Scatter, Target, TxControl};

use super::classify::{classify_bytes, SessionEffect};
use super::savepoints::SavepointStep;
use super::shards::complete_and_ready;
use super::{raise_sql, unsupported_error, End, Session, Stop};
use crate::error::{sqlstate, ClientError};
use crate::exec::insert::Reorder;
use crate::exec::merge::MergeCombine;
use crate::exec::{fan_out, Combine, Concat, First, LegRequest};
use crate::pool::BackendError;
use crate::protocol::backend::{self, TxStatus};
use crate::protocol::frontend::{self, DecodeError};
use crate::protocol::Frame;
use crate::session::pending::Expect;
use crate::topology::{BoundParams, Endpoint};

/// A planner error as the client sees it.
pub(super) fn plan_error(e: &PlanError) -> ClientError {
    let kind = if e.sqlstate() == sqlstate::FEATURE_NOT_SUPPORTED { "unsupported" } else { "plan" };
    ClientError::new(kind, sqlstate::FEATURE_NOT_SUPPORTED, e.to_string()).with_code(e.sqlstate())
}

fn not_supported(message: &'static str) -> ClientError {
    unsupported_error(message)
}

impl Session {
    pub(super) async fn on_query(&mut self, frame: Frame) -> Result<(), End> {
        // The text borrows a second handle on the frame's bytes (a reference count, not a copy).
        let held = frame.clone();
        let sql = match frontend::query_bytes(&held) {
            Ok(sql) => sql,
            Err(e) => {
                // As PostgreSQL: an error, not the end of the session (the next message is
                // where the length said), in its words.
                let message = match e {
                    DecodeError::Unterminated { .. } => "invalid string in message",
                    _ => "invalid message format",
                };
                let e = ClientError::new("protocol", sqlstate::PROTOCOL_VIOLATION, message);
                return self.reject(e).await;
            }
        };
        self.refresh_topology();
        // Rare paths are boxed below, so this future (and every session's, which holds it) is
        // sized for the common statement: a session took 7.6 KB before, mostly room for them.
        if !self.lookup_tx.is_empty() && self.tx == TxStatus::Idle {
            Box::pin(self.settle_lookup_tx()).await;
        }
        let (kind, effects) = classify_bytes(sql);
        self.shared.metrics.statement(kind);
        if let Some(reason) = self.unsupported(&effects) {
            return self.reject(unsupported_error(reason)).await;
        }
        if let Some(endpoint) = self.topology.single_endpoint() {
            // Unplanned: the text goes to the shard as it came, in the client's encoding.
            if !is_show_route(sql) {
                if let Some(entered) = self.enter_now(endpoint, false) {
                    return self.passed(entered, &frame, &effects);
                }
                return self.pass(frame, endpoint, &effects).await;
            }
        }
        let Ok(text) = std::str::from_utf8(sql) else {
            // The planner reads UTF-8 text.
            let e = ClientError::new(
                "plan",
                sqlstate::CHARACTER_NOT_IN_REPERTOIRE,
                "pg-router: the query text is not valid UTF-8; sharded statements need client_encoding UTF8",
            );
            return self.reject(e).await;
        };
        let plan = match self.topology.planner.plan(text) {
            Ok(p) => p,
            Err(e) => return self.reject(plan_error(&e)).await,
        };
        if let Some(e) = self.topology.write_block_error(&plan) {
            return self.reject(e).await;
        }
        match &plan.action {
            Action::Route(route) => self.route_query(frame, route, &effects).await,
            Action::Session => {
                let endpoint = self.preferred();
                self.pass(frame, endpoint, &effects).await
            }
            Action::Transaction(tc) => Box::pin(self.on_transaction(frame, text, tc, &effects)).await,
            Action::Multi(parts) => Box::pin(self.multi_query(frame, parts, &effects)).await,
            Action::InsertSplit(ins) => Box::pin(self.insert_split_query(frame, ins, &effects)).await,
            Action::Broadcast(b) => {
                let endpoints = match self.broadcast_endpoints(&b.keyspaces) {
                    Ok(e) => e,
                    Err(e) => return self.reject(e).await,
                };
                if let [endpoint] = endpoints[..] {
                    return self.pass(frame, endpoint, &effects).await;
                }
                let requests: Vec<LegRequest<'_>> =
                    endpoints.iter().map(|_| LegRequest::Simple(text)).collect();
                Box::pin(self.run_fan_out(&endpoints, &requests, &mut First::new(true), false)).await
            }
            Action::ShowRoute(inner) => {
                self.show_route(inner);
                Ok(())
            }
            Action::CopyIn(copy) => Box::pin(self.copy_in_query(frame, text, copy)).await,
        }
    }

    /// Refuses a simple-protocol statement. Inside a transaction the refusal must abort it, as
    /// any error would on PostgreSQL: the active backend raises it.
    pub(super) async fn reject(&mut self, e: ClientError) -> Result<(), End> {
        if self.backend.is_none() && self.tx != TxStatus::Idle {
            // The transaction holds shards but none is active (after a fan-out): abort it on
            // one of them, so a later COMMIT cannot commit it.
            if let Some((endpoint, b)) = self.others.pop() {
                self.backend = Some(b);
                self.endpoint = endpoint;
                self.set_cancel_target();
            }
        }
        if self.backend.is_some() && self.tx != TxStatus::Idle {
            self.shared.metrics.error(e.kind());
            let sql = raise_sql(&e.code, &e.message);
            let mut out = BytesMut::new();
            frontend::encode_query(&mut out, &sql);
            self.send(&out, Some(Expect::Query));
            return Ok(());
        }
        if self.tx == TxStatus::InTransaction {
            self.tx = TxStatus::Failed;
        }
        self.refuse(e, false);
        Ok(())
    }

    /// Forwards the client's Query unchanged to one shard.
    pub(super) async fn pass(
        &mut self,
        frame: Frame,
        endpoint: Endpoint,
        effects: &[SessionEffect],
    ) -> Result<(), End> {
        let entered = self.enter(endpoint, false).await;
        self.passed(entered, &frame, effects)
    }

    /// The rest of [`Session::pass`] once [`Session::enter`] has answered.
    fn passed(
        &mut self,
        entered: Result<bool, End>,
        frame: &Frame,
        effects: &[SessionEffect],
    ) -> Result<(), End> {
        if !entered? {
            return Ok(());
        }
        self.send(&frame.bytes, Some(Expect::Query));
        self.apply_effects(effects);
        Ok(())
    }

    async fn route_query(
        &mut self,
        frame: Frame,
        route: &Route,
        effects: &[SessionEffect],
    ) -> Result<(), End> {
        let endpoints = match self.resolve_target(&route.target, None).await {
            Ok(e) => e,
            Err(e) => return self.reject(e).await,
        };
        match endpoints[..] {
            [] => {
                let endpoint = self.fallback_endpoint(&route.target);
                self.pass(frame, endpoint, effects).await
            }
            [endpoint] => self.pass(frame, endpoint, effects).await,
            _ => {
                let Some(scatter) = &route.scatter else {
                    return self
                        .reject(not_supported("pg-router: this statement cannot run on several shards"))
                        .await;
                };
                let requests: Vec<LegRequest<'_>> =
                    endpoints.iter().map(|_| LegRequest::Simple(&scatter.sql)).collect();
                let mut combine = match self.combiner(scatter, Vec::new(), true) {
                    Ok(c) => c,
                    Err(e) => return self.reject(e).await,
                };
                Box::pin(self.run_fan_out(&endpoints, &requests, combine.as_mut(), false)).await
            }
        }
    }

    /// Where a statement whose keys match no shard runs (it returns no rows there): a shard
    /// of its keyspace, the held one if possible.
    pub(super) fn fallback_endpoint(&self, target: &Target) -> Endpoint {
        let keyspace = match target {
            Target::Keys { keyspace, .. }
            | Target::All { keyspace }
            | Target::Unsharded { keyspace }
            | Target::AnyOf { keyspace } => keyspace,
            _ => return self.preferred(),
        };
        let endpoints = self.topology.keyspace_endpoints(keyspace).unwrap_or_default();
        let preferred = self.preferred();
        if endpoints.contains(&preferred) {
            return preferred;
        }
        endpoints.first().copied().unwrap_or(preferred)
    }

    /// The combiner for a cross-shard statement.
    pub(super) fn combiner(
        &self,
        scatter: &Scatter,
        client_formats: Vec<i16>,
        send_description: bool,
    ) -> Result<Box<dyn Combine>, ClientError> {
        if scatter.write {
            return Ok(Box::new(Concat::new(send_description)));
        }
        let max_rows = self.shared.config.routing.max_buffered_rows;
        Ok(Box::new(MergeCombine::new(scatter.clone(), client_formats, send_description, max_rows)))
    }

    /// Runs a fan-out and takes the legs back. In the simple protocol the client also gets
    /// ReadyForQuery; in the extended protocol an error skips the rest of the batch.
    pub(super) async fn run_fan_out(
        &mut self,
        endpoints: &[Endpoint],
        requests: &[LegRequest<'_>],
        combine: &mut dyn Combine,
        extended: bool,
    ) -> Result<(), End> {
        if extended && !self.deferred.is_empty() {
            // Parses of this batch are answered first, in order.
            let endpoint = self.preferred();
            if !self.enter(endpoint, true).await? {
                return Ok(());
            }
        }
        let mut legs = match self.take_legs(endpoints).await {
            Ok(l) => l,
            Err(Stop::Refuse(e)) => {
                self.refuse(e, extended);
                return Ok(());
            }
            Err(Stop::End(e)) => return Err(e),
        };
        if self.client_skip && extended {
            self.return_legs(legs, None);
            return Ok(());
        }
        match fan_out(&mut legs, requests, combine, &mut self.client, &mut self.to_client).await {
            Err(_) => {
                for leg in legs {
                    drop(crate::pool::Pooled::take(leg.conn));
                }
                self.set_cancel_target();
                Err(End::ClientGone)
            }
            Ok(outcome) => {
                self.return_legs(legs, Some(&outcome));
                if outcome.errored {
                    self.shared.metrics.error("shard_error");
                    if extended {
                        self.client_skip = true;
                    }
                }
                if !extended {
                    backend::ready_for_query(&mut self.to_client, self.tx);
                }
                Ok(())
            }
        }
    }

    async fn multi_query(
        &mut self,
        frame: Frame,
        parts: &[Arc<Plan>],
        effects: &[SessionEffect],
    ) -> Result<(), End> {
        let mut target: Option<Endpoint> = None;
        let mut ends_transaction = false;
        for part in parts {
            let endpoint =
                match &part.action {
                    Action::Route(r) => match self.resolve_target(&r.target, None).await {
                        Ok(e) if e.len() > 1 => return self
                            .reject(not_supported(
                                "pg-router: a query string with several statements must stay on one shard; \
                                 send the statements one by one",
                            ))
                            .await,
                        Ok(e) => e.first().copied(),
                        Err(e) => return self.reject(e).await,
                    },
                    Action::Session => None,
                    Action::Transaction(TxControl::TwoPhase) => {
                        return self.reject(not_supported(TWO_PHASE)).await;
                    }
                    Action::Transaction(_) => {
                        ends_transaction = true;
                        None
                    }
                    Action::Broadcast(b) => match self.broadcast_endpoints(&b.keyspaces) {
                        Ok(e) if e.len() == 1 => e.first().copied(),
                        Ok(_) => return self.reject(not_supported(MULTI_FAN_OUT)).await,
                        Err(e) => return self.reject(e).await,
                    },
                    Action::InsertSplit(ins) if ins.auto_increment.is_some() || !ins.lookups.is_empty() => {
                        return self.reject(not_supported(MULTI_FAN_OUT)).await;
                    }
                    Action::InsertSplit(ins) => match self.split_rows(ins, &ins.keys, None) {
                        Ok(g) if g.len() == 1 => g.first().map(|(e, _)| *e),
                        Ok(_) => return self.reject(not_supported(MULTI_FAN_OUT)).await,
                        Err(e) => return self.reject(e).await,
                    },
                    Action::ShowRoute(_) | Action::Multi(_) | Action::CopyIn(_) => {
                        return self.reject(not_supported(MULTI_FAN_OUT)).await;
                    }
                };
            match (target, endpoint) {
                (Some(t), Some(e)) if t != e => {
                    return self
                        .reject(not_supported(
                            "pg-router: the statements of this query string go to different shards; send \
                             them one by one",
                        ))
                        .await
                }
                (None, Some(e)) => target = Some(e),
                _ => {}
            }
        }
        if ends_transaction && (!self.others.is_empty() || !self.lookup_tx.is_empty()) {
            return self
                .reject(not_supported(
                    "pg-router: this transaction spans several shards; send transaction control statements \
                     (COMMIT, ROLLBACK, SAVEPOINT...) as queries of their own",
                ))
                .await;
        }
        if ends_transaction {
            // The string runs on one shard; keep the savepoints it opens for shards joining later.
            let mut open = self.tx != TxStatus::Idle;
            for part in parts {
                match &part.action {
                    Action::Transaction(TxControl::Begin) => open = true,
                    Action::Transaction(TxControl::Commit | TxControl::Rollback) => {
                        open = false;
                        self.savepoints.clear();
                    }
                    Action::Transaction(tc) if open => {
                        self.note_savepoint(tc);
                    }
                    _ => {}
                }
            }
        }
        let endpoint = target.unwrap_or_else(|| self.preferred());
        self.pass(frame, endpoint, effects).await
    }

    async fn on_transaction(
        &mut self,
        frame: Frame,
        text: &str,
        tc: &TxControl,
        effects: &[SessionEffect],
    ) -> Result<(), End> {
        let nothing_held = self.backend.is_none() && self.others.is_empty();
        match tc {
            TxControl::Begin => {
                if nothing_held
                    && self.pending.is_empty()
                    && self.tx == TxStatus::Idle
                    && self.transaction_mode()
                {
                    // Lazy BEGIN: the shards the transaction touches get it with their first
                    // statement, so a one-shard transaction costs no extra round trip.
                    self.begin = Some(text.to_owned());
                    self.tx = TxStatus::InTransaction;
                    self.synthetic(complete_and_ready("BEGIN", TxStatus::InTransaction));
                    return Ok(());
                }
                if self.tx == TxStatus::Idle {
                    self.begin = Some(text.to_owned());
                }
                let endpoint = self.preferred();
                self.pass(frame, endpoint, effects).await
            }
            TxControl::Commit | TxControl::Rollback => {
                let commit = matches!(tc, TxControl::Commit) && self.tx != TxStatus::Failed;
                if !self.lookup_tx.is_empty() {
                    // The router ends the block itself: lookup rows commit after the shards.
                    return match self.end_block_with_lookups(commit).await {
                        Ok(tag) => {
                            self.synthetic(complete_and_ready(tag, TxStatus::Idle));
                            Ok(())
                        }
                        Err(Stop::End(e)) => Err(e),
                        Err(Stop::Refuse(e)) => {
                            self.refuse(e, false);
                            Ok(())
                        }
                    };
                }
                // COMMIT of a failed transaction rolls back (PostgreSQL answers "ROLLBACK");
                // send ROLLBACK so a shard that did not fail cannot commit its part.
                let frame = if matches!(tc, TxControl::Commit) && !commit {
                    let mut out = BytesMut::new();
                    frontend::encode_query(&mut out, "ROLLBACK");
                    Frame { tag: crate::protocol::frontend::tag::QUERY, bytes: out.freeze() }
                } else {
                    frame
                };
                if nothing_held && self.tx != TxStatus::Idle {
                    self.tx = TxStatus::Idle;
                    self.block_ended();
                    let tag = if commit { "COMMIT" } else { "ROLLBACK" };
                    self.synthetic(complete_and_ready(tag, TxStatus::Idle));
                    return Ok(());
                }
                if !self.others.is_empty() {
                    match self.finish_others(commit).await {
                        Ok(()) => {}
                        Err(Stop::End(e)) => return Err(e),
                        Err(Stop::Refuse(e)) => {
                            self.roll_back_active();
                            self.refuse(e, false);
                            return Ok(());
                        }
                    }
                }
                let endpoint = self.preferred();
                self.pass(frame, endpoint, effects).await
            }
            TxControl::Savepoint(_) | TxControl::Release(_) | TxControl::RollbackTo(_) => {
                match self.spread_savepoint(tc).await {
                    Ok(SavepointStep::Forward) => {
                        let endpoint = self.preferred();
                        self.pass(frame, endpoint, effects).await
                    }
                    Ok(SavepointStep::Answered(tag)) => {
                        self.synthetic(complete_and_ready(tag, self.tx));
                        Ok(())
                    }
                    Err(Stop::End(e)) => Err(e),
                    Err(Stop::Refuse(e)) => self.reject(e).await,
                }
            }
            TxControl::TwoPhase => self.reject(not_supported(TWO_PHASE)).await,
        }
    }

    /// Ends the transaction on the active backend with a ROLLBACK whose reply the client does
    /// not see; the session is between transactions.
    pub(super) fn roll_back_active(&mut self) {
        if self.backend.is_some() {
            let mut out = BytesMut::new();
            frontend::encode_query(&mut out, "ROLLBACK");
            self.send(&out, Some(Expect::HiddenQuery));
        }
        self.tx = TxStatus::Idle;
    }

    fn show_route(&mut self, inner: &Plan) {
        let mut out = BytesMut::new();
        backend::text_row_description(&mut out, &["route"]);
        let text = inner.explain();
        let mut rows = 0;
        for line in text.lines() {
            backend::text_data_row(&mut out, &[line]);
            rows += 1;
        }
        backend::command_complete(&mut out, &format!("SELECT {rows}"));
        backend::ready_for_query(&mut out, self.tx);
        self.synthetic(out.freeze());
    }

    pub(super) fn broadcast_endpoints(&self, keyspaces: &[String]) -> Result<Vec<Endpoint>, ClientError> {
        let mut endpoints = Vec::new();
        for ks in keyspaces {
            endpoints.extend(self.topology.keyspace_endpoints(ks)?);
        }
        endpoints.sort_unstable();
        endpoints.dedup();
        Ok(endpoints)
    }

    /// Takes one id per row from the sequence of an INSERT's `auto_increment` column, on a
    /// connection of its own (sequences are not transactional, as in PostgreSQL).
    pub(super) async fn fetch_ids(&mut self, fill: &AutoFill, rows: usize) -> Result<Vec<i64>, ClientError> {
        let endpoint = self.topology.keyspace_endpoints(&fill.sequence_keyspace)?.first().copied();
        let endpoint = endpoint.ok_or_else(|| {
            ClientError::new(
                "routing",
                sqlstate::INTERNAL_ERROR,
                format!("pg-router: keyspace {} has no shard", fill.sequence_keyspace),
            )
        })?;
        let mut conn = self.checkout(endpoint).await?;
        let sql = format!(
            "SELECT nextval('{}') FROM generate_series(1, {rows})",
            fill.sequence.replace('\'', "''")
        );
        let values = match conn.query_column(&sql).await {
            Ok(v) => v,
            Err(BackendError::Server { code, message, .. }) => {
                return Err(ClientError::new("sequence", sqlstate::INTERNAL_ERROR, message)
                    .with_code(code)
                    .with_hint(format!(
                    "pg-router fills {} from the sequence {} of keyspace {}; create it with CREATE SEQUENCE",
                    fill.column, fill.sequence, fill.sequence_keyspace
                )))
            }
            Err(e) => {
                drop(crate::pool::Pooled::take(conn));
                return Err(ClientError::new(
                    "backend_lost",
                    sqlstate::CONNECTION_FAILURE,
                    format!("pg-router: {e}"),
                ));
            }
        };
        values
            .into_iter()
            .map(|v| v.and_then(|s| s.parse().ok()))
            .collect::<Option<Vec<i64>>>()
            .filter(|ids| ids.len() == rows)
            .ok_or_else(|| {
                ClientError::new(
                    "sequence",
                    sqlstate::INTERNAL_ERROR,
                    "pg-router: the sequence returned no ids",
                )
            })
    }

    /// The sharding keys of an INSERT's rows: the generated ids when they are the key.
    pub(super) fn insert_keys(ins: &InsertSplit, ids: Option<&[i64]>) -> Vec<KeyExpr> {
        match (&ins.auto_increment, ids) {
            (Some(fill), Some(ids)) if fill.is_key => {
                ids.iter().map(|id| KeyExpr::Literal(vindex::Value::Int(*id))).collect()
            }
            _ => ins.keys.clone(),
        }
    }

    /// The INSERT for some of the rows, with the generated ids added when there are any.
    pub(super) fn insert_sql(ins: &InsertSplit, rows: &[usize], ids: Option<&[i64]>) -> (String, Vec<usize>) {
        match (&ins.auto_increment, ids) {
            (Some(fill), Some(ids)) => {
                let values: Vec<i64> = rows.iter().filter_map(|&r| ids.get(r).copied()).collect();
                ins.template.sql_for_rows_filled(rows, &fill.column, &values)
            }
            _ => ins.template.sql_for_rows(rows),
        }
    }

    /// Groups an INSERT's rows by the endpoint their sharding key maps to, in first-seen order.
    pub(super) fn split_rows(
        &self,
        ins: &InsertSplit,
        keys: &[KeyExpr],
        params: Option<&BoundParams<'_>>,
    ) -> Result<Vec<(Endpoint, Vec<usize>)>, ClientError> {
        let mut groups: Vec<(Endpoint, Vec<usize>)> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let endpoint = self.topology.resolve_key(&ins.keyspace, &ins.vindex, key, params)?;
            match groups.iter_mut().find(|(e, _)| *e == endpoint) {
                Some((_, rows)) => rows.push(i),
                None => groups.push((endpoint, vec![i])),
            }
        }
        Ok(groups)
    }

    async fn insert_split_query(
        &mut self,
        frame: Frame,
        ins: &InsertSplit,
        effects: &[SessionEffect],
    ) -> Result<(), End> {
        let ids = match &ins.auto_increment {
            Some(fill) => match self.fetch_ids(fill, ins.template.row_count()).await {
                Ok(ids) => Some(ids),
                Err(e) => return self.reject(e).await,
            },
            None => None,
        };
        let keys = Self::insert_keys(ins, ids.as_deref());
        let groups = match self.split_rows(ins, &keys, None) {
            Ok(g) => g,
            Err(e) => return self.reject(e).await,
        };
        if !ins.lookups.is_empty() {
            if let Err(e) = self.write_lookups(ins, &keys, None).await {
                return self.reject(e).await;
            }
        }
        if let ([(endpoint, _)], None) = (&groups[..], &ids) {
            return self.pass(frame, *endpoint, effects).await;
        }
        let endpoints: Vec<Endpoint> = groups.iter().map(|(e, _)| *e).collect();
        let sqls: Vec<String> =
            groups.iter().map(|(_, rows)| Self::insert_sql(ins, rows, ids.as_deref()).0).collect();
        let requests: Vec<LegRequest<'_>> = sqls.iter().map(|s| LegRequest::Simple(s)).collect();
        let rows_of: Vec<Vec<usize>> = groups.into_iter().map(|(_, r)| r).collect();
        if ins.returning {
            self.run_fan_out(&endpoints, &requests, &mut Reorder::new(rows_of, true), false).await
        } else {
            self.run_fan_out(&endpoints, &requests, &mut Concat::new(true), false).await
        }
    }
}

/// `SHOW ROUTE FOR ...` (pg-router's own statement, which the planner answers).
pub(super) fn is_show_route(sql: &[u8]) -> bool {
    let start = sql.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(sql.len());
    sql[start..].get(..10).is_some_and(|w| w.eq_ignore_ascii_case(b"show route"))
}

const MULTI_FAN_OUT: &str = "pg-router: DDL on several shards, INSERTs whose rows go to several shards or \
                             that add lookup rows, COPY into sharded tables and SHOW ROUTE must be sent as their own query, not in a \
                             query string with several statements";

const TWO_PHASE: &str = "pg-router: PREPARE TRANSACTION, COMMIT PREPARED and ROLLBACK PREPARED cannot be \
                         sent through the router";
