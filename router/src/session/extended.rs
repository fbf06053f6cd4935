//! Extended-protocol messages: Parse, Bind, Describe, Execute, Close, Sync, Flush.
//!
//! A Parse does not say which shard the statement will run on; the Bind does (its parameter
//! values carry the sharding key). So Parses wait in `deferred` and go to the shard chosen by
//! the next routed message of the batch. A Bind whose statement needs several shards opens a
//! [`RouterPortal`]: the router answers Describe and Execute on it by fanning out.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use planner::{Action, InsertSplit, Plan, PlanError, Scatter, TxControl};

use super::savepoints::SavepointStep;
use super::simple::plan_error;
use super::statements::StatementDef;
use super::{unsupported_error, Deferred, End, Session, Stop, Unnamed, UnnamedText};
use crate::error::{sqlstate, ClientError};
use crate::exec::chunks::{Capture, Chunks};
use crate::exec::insert::Reorder;
use crate::exec::{Combine, Concat, DescribeOnly, First, LegRequest};
use crate::protocol::backend;
use crate::protocol::frontend::{self, tag, Bind, BindParams, DescribeOrClose, Parse, Target};
use crate::protocol::Frame;
use crate::session::pending::Expect;
use crate::topology::{BoundParams, Endpoint};

/// A portal the router runs itself.
pub(super) struct RouterPortal {
    kind: PortalKind,
    /// The client's statement text and raw parameter-type section.
    query: String,
    param_types: Bytes,
    formats: Vec<i16>,
    values: Vec<Option<Bytes>>,
    result_formats: Vec<i16>,
    /// The merged result, once an Execute with a row limit has run the portal.
    fetched: Option<Chunks>,
}

enum PortalKind {
    Scatter {
        endpoints: Vec<Endpoint>,
        scatter: Scatter,
    },
    Broadcast {
        endpoints: Vec<Endpoint>,
    },
    /// `ids`: values generated for the INSERT's `auto_increment` column, one per row.
    Insert {
        groups: Vec<(Endpoint, Vec<usize>)>,
        split: InsertSplit,
        ids: Option<Vec<i64>>,
    },
    ShowRoute(String),
    /// A statement the router answers with a CommandComplete alone: COMMIT/ROLLBACK of a
    /// transaction that never reached a shard (`ends_block`), a savepoint statement.
    Complete {
        tag: &'static str,
        ends_block: bool,
    },
}

/// The rows of a split INSERT portal, by shard.
struct InsertRows<'a> {
    groups: &'a [(Endpoint, Vec<usize>)],
    split: &'a InsertSplit,
    ids: Option<&'a [i64]>,
}

/// Parameter type OIDs from a Parse's raw `count:i16 | oid:i32*` section.
fn param_oids(raw: &[u8]) -> Vec<u32> {
    let mut r = raw;
    if r.len() < 2 {
        return Vec::new();
    }
    let n = r.get_i16().max(0) as usize;
    (0..n).map_while(|_| (r.len() >= 4).then(|| r.get_u32())).collect()
}

fn encode_param_oids(oids: &[u32]) -> Bytes {
    let mut out = BytesMut::with_capacity(2 + 4 * oids.len());
    out.put_i16(oids.len() as i16);
    for o in oids {
        out.put_u32(*o);
    }
    out.freeze()
}

/// The shard each portal was bound on. The unnamed portal, which nearly every driver uses, is
/// kept apart from the map, so the common path hashes nothing.
#[derive(Default)]
pub(super) struct PortalShards {
    unnamed: Option<Endpoint>,
    named: HashMap<String, Endpoint>,
}

impl PortalShards {
    fn get(&self, portal: &str) -> Option<Endpoint> {
        if portal.is_empty() {
            self.unnamed
        } else {
            self.named.get(portal).copied()
        }
    }

    pub(super) fn insert(&mut self, portal: &str, endpoint: Endpoint) {
        if portal.is_empty() {
            self.unnamed = Some(endpoint);
        } else {
            self.named.insert(portal.to_owned(), endpoint);
        }
    }

    fn remove(&mut self, portal: &str) -> Option<Endpoint> {
        if portal.is_empty() {
            self.unnamed.take()
        } else {
            self.named.remove(portal)
        }
    }

    pub(super) fn clear(&mut self) {
        self.unnamed = None;
        self.named.clear();
    }
}

/// What a Parse defines.
enum Parsed {
    /// A named statement, by its router-global definition.
    Named(Arc<StatementDef>),
    Unnamed(Arc<UnnamedText>),
}

fn decode_error(e: impl std::fmt::Display) -> End {
    End::Fatal(ClientError::protocol(e.to_string()))
}

impl Session {
    pub(super) async fn on_parse(&mut self, frame: Frame) -> Result<(), End> {
        let parse = Parse::decode(&frame).map_err(decode_error)?;
        self.refresh_topology();
        let named = !parse.name.is_empty();
        let statement = if named {
            let query = parse.text().map_err(decode_error)?;
            Parsed::Named(self.shared.statements.intern(query, parse.param_types))
        } else {
            Parsed::Unnamed(self.unnamed_text(&parse)?)
        };
        let (kind, effects) = match &statement {
            Parsed::Named(def) => (def.kind, def.effects.clone()),
            Parsed::Unnamed(text) => (text.kind, text.effects.clone()),
        };
        if !named {
            self.unnamed_kind = kind;
        }
        if let Some(reason) = self.unsupported(&effects) {
            self.refuse(unsupported_error(reason), true);
            return Ok(());
        }
        match statement {
            Parsed::Unnamed(text) => {
                // This Parse replaces the statement wherever it goes next.
                self.unnamed = Some(Unnamed { text, parsed_on: None });
                self.deferred.push(Deferred::Raw(frame.clone()));
            }
            Parsed::Named(def) => {
                let name = parse.name.to_owned();
                if self.transaction_mode() && self.statements.contains_key(&name) {
                    let e = ClientError::new(
                        "duplicate_statement",
                        sqlstate::INTERNAL_ERROR,
                        format!("prepared statement \"{name}\" already exists"),
                    )
                    .with_code("42P05");
                    self.refuse_deferred();
                    self.refuse(e, true);
                    return Ok(());
                }
                self.statements.insert(name.clone(), def.clone());
                if self.transaction_mode() {
                    self.deferred.push(Deferred::Named { def, client_name: name });
                } else {
                    self.deferred.push(Deferred::Raw(frame.clone()));
                }
            }
        }
        self.apply_effects(&effects);
        Ok(())
    }

    /// The text of an unnamed Parse: one of the session's recent texts, or classified now.
    fn unnamed_text(&mut self, parse: &Parse<'_>) -> Result<Arc<UnnamedText>, End> {
        self.recent_texts.text_of(self.unnamed.as_ref(), parse).map_err(decode_error)
    }

    /// The statement a Bind or Describe names: text, raw parameter types, and its global
    /// definition when it is a named statement.
    fn statement(&self, name: &str) -> Option<(Arc<str>, Bytes, Option<Arc<StatementDef>>)> {
        if name.is_empty() {
            return self.unnamed.as_ref().map(|u| (u.text.query.clone(), u.text.param_types.clone(), None));
        }
        self.statements.get(name).map(|d| (d.query.clone(), d.param_types.clone(), Some(d.clone())))
    }

    /// The plan of a Bind's statement (`def`, or the unnamed statement when `None`; text
    /// `query`): the one kept with the statement if it was planned under this topology.
    fn statement_plan(&self, def: Option<&StatementDef>, query: &str) -> Result<Arc<Plan>, PlanError> {
        let slot = match (def, &self.unnamed) {
            (Some(d), _) => &d.plan,
            (None, Some(u)) => &u.text.plan,
            (None, None) => return self.topology.planner.plan(query),
        };
        if let Some(plan) = slot.get(self.topology.id) {
            return Ok(plan);
        }
        let plan = self.topology.planner.plan(query)?;
        slot.set(self.topology.id, &plan);
        Ok(plan)
    }

    pub(super) async fn on_bind(&mut self, frame: Frame) -> Result<(), End> {
        let bind = Bind::decode(&frame).map_err(decode_error)?;
        // A client that prepared its statements once sends only Bind/Execute from then on:
        // routing changes must reach it here, not only at Parse.
        self.refresh_topology();
        if !self.portals.is_empty() {
            self.portals.remove(bind.portal);
        }
        let Some((query, param_types, def)) = self.statement(bind.statement) else {
            // Unknown statement: the shard reports 26000 with the client's own name.
            self.shared.metrics.statement(self.unnamed_kind);
            return self.forward_any(frame, Some(Expect::Bind)).await;
        };
        self.shared.metrics.statement(def.as_ref().map_or(self.unnamed_kind, |d| d.kind));
        if let Some(endpoint) = self.topology.single_endpoint() {
            if !super::simple::is_show_route(query.as_bytes()) {
                if let Some(entered) = self.enter_now(endpoint, true) {
                    return self.bound_on(entered, endpoint, &frame, &bind, def);
                }
                return self.bind_on(endpoint, &frame, &bind, def).await;
            }
        }
        let plan = match self.statement_plan(def.as_deref(), &query) {
            Ok(p) => p,
            Err(e) => {
                self.refuse_deferred();
                self.refuse(plan_error(&e), true);
                return Ok(());
            }
        };
        if let Some(e) = self.topology.write_block_error(&plan) {
            self.refuse_deferred();
            self.refuse(e, true);
            return Ok(());
        }
        if !self.lookup_tx.is_empty() && self.tx == crate::protocol::backend::TxStatus::Idle {
            Box::pin(self.settle_lookup_tx()).await;
        }
        let params = bind.params().map_err(decode_error)?;
        let bound = BoundParams { formats: &params.formats, values: &params.values, types: &param_types };
        // A block that added lookup rows is ended by the router (see `lookup`).
        let mut ended_block = None;
        if let Action::Transaction(tc) = &plan.action {
            if !self.lookup_tx.is_empty() {
                match tc {
                    TxControl::Commit | TxControl::Rollback => {
                        let commit = matches!(tc, TxControl::Commit)
                            && self.tx != crate::protocol::backend::TxStatus::Failed;
                        match Box::pin(self.end_block_with_lookups(commit)).await {
                            Ok(tag) => ended_block = Some(tag),
                            Err(Stop::End(e)) => return Err(e),
                            Err(Stop::Refuse(e)) => return self.refuse_bind(e),
                        }
                    }
                    _ => {}
                }
            }
        }
        let kind =
            match &plan.action {
                Action::Transaction(_) if ended_block.is_some() => {
                    PortalKind::Complete { tag: ended_block.unwrap_or("COMMIT"), ends_block: true }
                }
                Action::Transaction(
                    tc @ (TxControl::Savepoint(_) | TxControl::Release(_) | TxControl::RollbackTo(_)),
                ) => match Box::pin(self.spread_savepoint(tc)).await {
                    Ok(SavepointStep::Forward) => {
                        let endpoint = self.preferred();
                        return self.bind_on(endpoint, &frame, &bind, def).await;
                    }
                    Ok(SavepointStep::Answered(tag)) => PortalKind::Complete { tag, ends_block: false },
                    Err(Stop::End(e)) => return Err(e),
                    Err(Stop::Refuse(e)) => return self.refuse_bind(e),
                },
                Action::Route(route) => {
                    let endpoints = match self.resolve_target(&route.target, Some(&bound)).await {
                        Ok(e) => e,
                        Err(e) => return self.refuse_bind(e),
                    };
                    match (&endpoints[..], &route.scatter) {
                        ([], _) => {
                            let endpoint = self.fallback_endpoint(&route.target);
                            return self.bind_on(endpoint, &frame, &bind, def).await;
                        }
                        ([endpoint], _) => return self.bind_on(*endpoint, &frame, &bind, def).await,
                        (_, Some(scatter)) => PortalKind::Scatter { endpoints, scatter: scatter.clone() },
                        (_, None) => {
                            return self.refuse_bind(unsupported_error(
                                "pg-router: this statement cannot run on several shards",
                            ))
                        }
                    }
                }
                Action::InsertSplit(ins) => {
                    let ids = match &ins.auto_increment {
                        Some(fill) => match Box::pin(self.fetch_ids(fill, ins.template.row_count())).await {
                            Ok(ids) => Some(ids),
                            Err(e) => return self.refuse_bind(e),
                        },
                        None => None,
                    };
                    let keys = Self::insert_keys(ins, ids.as_deref());
                    let groups = self.split_rows(ins, &keys, Some(&bound));
                    if groups.is_ok() && !ins.lookups.is_empty() {
                        if let Err(e) = Box::pin(self.write_lookups(ins, &keys, Some(&bound))).await {
                            return self.refuse_bind(e);
                        }
                    }
                    match groups {
                        Err(e) => return self.refuse_bind(e),
                        Ok(groups) if groups.len() == 1 && ids.is_none() => {
                            return self.bind_on(groups[0].0, &frame, &bind, def).await
                        }
                        Ok(groups) => PortalKind::Insert { groups, split: ins.clone(), ids },
                    }
                }
                Action::Broadcast(b) => match self.broadcast_endpoints(&b.keyspaces) {
                    Err(e) => return self.refuse_bind(e),
                    Ok(e) if e.len() == 1 => return self.bind_on(e[0], &frame, &bind, def).await,
                    Ok(endpoints) => PortalKind::Broadcast { endpoints },
                },
                Action::ShowRoute(inner) => PortalKind::ShowRoute(inner.explain()),
                Action::CopyIn(copy) => match self.topology.keyspace_endpoints(&copy.keyspace) {
                    Ok(e) if e.len() == 1 => return self.bind_on(e[0], &frame, &bind, def).await,
                    Ok(_) => return self.refuse_bind(unsupported_error(
                        "pg-router: COPY into a sharded table must be sent as a simple query (the extended \
                             protocol is not supported for it)",
                    )),
                    Err(e) => return self.refuse_bind(e),
                },
                Action::Transaction(TxControl::TwoPhase) => return self.refuse_bind(unsupported_error(
                    "pg-router: PREPARE TRANSACTION, COMMIT PREPARED and ROLLBACK PREPARED cannot be sent \
                     through the router",
                )),
                Action::Transaction(TxControl::Commit | TxControl::Rollback) if !self.others.is_empty() => {
                    let commit = matches!(plan.action, Action::Transaction(TxControl::Commit));
                    let failed = self.tx == crate::protocol::backend::TxStatus::Failed;
                    match Box::pin(self.finish_others(commit && !failed)).await {
                        Ok(()) => {}
                        Err(Stop::End(e)) => return Err(e),
                        Err(Stop::Refuse(e)) => {
                            // As in the simple protocol: the whole transaction ends, rolled back.
                            self.roll_back_active();
                            return self.refuse_bind(e);
                        }
                    }
                    let endpoint = self.preferred();
                    return self.bind_on(endpoint, &frame, &bind, def).await;
                }
                Action::Transaction(tc @ (TxControl::Commit | TxControl::Rollback))
                    if self.backend.is_none()
                        && self.others.is_empty()
                        && self.tx != crate::protocol::backend::TxStatus::Idle =>
                {
                    // The transaction never reached a shard (lazy BEGIN, then a refusal).
                    let commit = matches!(tc, TxControl::Commit)
                        && self.tx != crate::protocol::backend::TxStatus::Failed;
                    PortalKind::Complete { tag: if commit { "COMMIT" } else { "ROLLBACK" }, ends_block: true }
                }
                Action::Transaction(TxControl::Begin) => {
                    if self.tx == crate::protocol::backend::TxStatus::Idle {
                        // Replayed on every shard the transaction joins (isolation level...).
                        self.begin = Some(query.to_string());
                    }
                    let endpoint = self.preferred();
                    return self.bind_on(endpoint, &frame, &bind, def).await;
                }
                _ => {
                    let endpoint = self.preferred();
                    return self.bind_on(endpoint, &frame, &bind, def).await;
                }
            };
        if matches!(kind, PortalKind::Complete { .. }) {
            // No shard is involved: answer the batch's Parses here (they are prepared lazily
            // wherever they are used later).
            self.refuse_deferred();
        }
        let portal = bind.portal.to_owned();
        Box::pin(self.open_portal(portal, kind, query.to_string(), param_types, params)).await
    }

    fn refuse_bind(&mut self, e: ClientError) -> Result<(), End> {
        self.refuse_deferred();
        self.refuse(e, true);
        Ok(())
    }

    /// Forwards a Bind to one shard, preparing its statement there first if needed.
    /// Sends the client's Bind (`frame`, decoded as `bind`) to `endpoint`.
    async fn bind_on(
        &mut self,
        endpoint: Endpoint,
        frame: &Frame,
        bind: &Bind<'_>,
        def: Option<Arc<StatementDef>>,
    ) -> Result<(), End> {
        let entered = self.enter(endpoint, true).await;
        self.bound_on(entered, endpoint, frame, bind, def)
    }

    /// The rest of [`Session::bind_on`] once [`Session::enter`] has answered.
    fn bound_on(
        &mut self,
        entered: Result<bool, End>,
        endpoint: Endpoint,
        frame: &Frame,
        bind: &Bind<'_>,
        def: Option<Arc<StatementDef>>,
    ) -> Result<(), End> {
        if !entered? {
            return Ok(());
        }
        self.portal_shards.insert(bind.portal, endpoint);
        match def {
            Some(def) if self.transaction_mode() => {
                self.ensure_prepared(&def);
                bind.put_with_statement(&mut self.to_backend, &def.name);
                self.sent(Expect::Bind);
            }
            Some(_) => self.send(&frame.bytes, Some(Expect::Bind)),
            None => {
                self.ensure_unnamed_parsed();
                self.send(&frame.bytes, Some(Expect::Bind));
            }
        }
        Ok(())
    }

    /// Makes sure `def` is prepared on the active backend, injecting a hidden Parse if not.
    fn ensure_prepared(&mut self, def: &Arc<StatementDef>) {
        let Some(b) = self.backend.as_mut() else { return };
        if !b.prepared.insert(def.id) {
            return;
        }
        frontend::encode_parse(&mut self.to_backend, &def.name, &def.query, &def.param_types);
        self.sent(Expect::Parse { def: Some(def.clone()), client_name: None, hide: true });
    }

    /// The unnamed statement was parsed on another backend (an earlier transaction): parse it
    /// again here, hidden.
    fn ensure_unnamed_parsed(&mut self) {
        let Some(b) = self.backend.as_ref() else { return };
        let here = (self.endpoint, b.cancel.pid);
        let Some(u) = self.unnamed.as_mut() else { return };
        if u.parsed_on == Some(here) {
            return;
        }
        u.parsed_on = Some(here);
        frontend::encode_parse(&mut self.to_backend, "", &u.text.query, &u.text.param_types);
        self.sent(Expect::Parse { def: None, client_name: None, hide: true });
    }

    async fn open_portal(
        &mut self,
        name: String,
        kind: PortalKind,
        query: String,
        param_types: Bytes,
        params: BindParams<'_>,
    ) -> Result<(), End> {
        // Parses waiting in this batch are answered by a shard first, so the client's
        // replies stay in order and a bad statement fails where PostgreSQL would fail it.
        if !self.deferred.is_empty() {
            let endpoint = self.preferred();
            if !self.enter(endpoint, true).await? {
                return Ok(());
            }
        }
        let portal = RouterPortal {
            kind,
            query,
            param_types,
            formats: params.formats,
            values: params.values.iter().map(|v| v.map(Bytes::copy_from_slice)).collect(),
            result_formats: params.result_formats,
            fetched: None,
        };
        self.portals.insert(name, portal);
        let mut out = BytesMut::new();
        backend::bind_complete(&mut out);
        self.synthetic(out.freeze());
        Ok(())
    }

    pub(super) async fn on_describe(&mut self, frame: Frame) -> Result<(), End> {
        let d = DescribeOrClose::decode(&frame).map_err(decode_error)?;
        if d.target == Target::Portal && self.portals.contains_key(d.name) {
            let name = d.name.to_owned();
            return Box::pin(self.describe_portal(&name)).await;
        }
        if d.target == Target::Portal {
            let bound_on = self.portal_shards.get(d.name);
            return self.forward_portal(bound_on, frame, Expect::Describe).await;
        }
        let def = self.statement(d.name).and_then(|(_, _, def)| def);
        let endpoint = self.preferred();
        if !self.enter(endpoint, true).await? {
            return Ok(());
        }
        match def {
            Some(def) if self.transaction_mode() => {
                self.ensure_prepared(&def);
                frontend::encode_statement_target(&mut self.to_backend, tag::DESCRIBE, &def.name);
                self.sent(Expect::Describe);
            }
            Some(_) => self.send(&frame.bytes, Some(Expect::Describe)),
            None => {
                if d.name.is_empty() {
                    self.ensure_unnamed_parsed();
                }
                self.send(&frame.bytes, Some(Expect::Describe));
            }
        }
        Ok(())
    }

    /// Describes a router portal: the client's own statement, described by one shard with the
    /// client's parameters and result formats, is exactly what the merged result looks like.
    async fn describe_portal(&mut self, name: &str) -> Result<(), End> {
        if !self.answer_waiting_parses().await? {
            return Ok(());
        }
        let Some(p) = self.portals.get(name) else { return Ok(()) };
        let endpoint = match &p.kind {
            PortalKind::ShowRoute(_) => {
                let mut out = BytesMut::new();
                backend::text_row_description(&mut out, &["route"]);
                self.synthetic(out.freeze());
                return Ok(());
            }
            PortalKind::Complete { .. } => {
                let mut out = BytesMut::new();
                backend::no_data(&mut out);
                self.synthetic(out.freeze());
                return Ok(());
            }
            PortalKind::Scatter { endpoints, .. } | PortalKind::Broadcast { endpoints } => endpoints[0],
            PortalKind::Insert { groups, .. } => groups[0].0,
        };
        let (query, param_types, formats, result_formats) =
            (p.query.clone(), p.param_types.clone(), p.formats.clone(), p.result_formats.clone());
        let values: Vec<Option<Bytes>> = p.values.clone();
        let values: Vec<Option<&[u8]>> = values.iter().map(|v| v.as_deref()).collect();
        let request = LegRequest::Extended {
            sql: &query,
            param_types: &param_types,
            formats: &formats,
            values: &values,
            result_formats: &result_formats,
            describe_only: true,
        };
        Box::pin(self.run_fan_out(&[endpoint], &[request], &mut DescribeOnly::default(), true)).await
    }

    /// Parses waiting in this batch go to a shard before the router answers anything itself,
    /// so the client's replies stay in order. False when the batch was refused instead.
    async fn answer_waiting_parses(&mut self) -> Result<bool, End> {
        if self.deferred.is_empty() {
            return Ok(true);
        }
        if self.tx == crate::protocol::backend::TxStatus::Failed && self.backend.is_none() {
            // No shard can take them (the transaction failed before reaching one): answer
            // them here; they are prepared wherever they are used later.
            self.refuse_deferred();
            return Ok(true);
        }
        let endpoint = self.preferred();
        self.enter(endpoint, true).await
    }

    /// Sends a Describe or Execute of a portal to the shard it was bound on (if the router
    /// knows it).
    /// A Describe or Execute of a portal bound on the active backend, with nothing waiting
    /// to be sent before it: forwarded as is. This is most of the extended-protocol traffic,
    /// and it needs none of the checks of the general path. Returns false when the frame must
    /// take the general path.
    pub(super) fn forward_to_active(&mut self, frame: &Frame) -> Result<bool, End> {
        if self.backend.is_none() || self.client_skip || !self.deferred.is_empty() {
            return Ok(false);
        }
        let (portal, expect) = match frame.tag {
            tag::EXECUTE => (frontend::execute_max_rows(frame).map_err(decode_error)?.0, Expect::Execute),
            tag::DESCRIBE => match DescribeOrClose::decode(frame).map_err(decode_error)? {
                d if d.target == Target::Portal => (d.name, Expect::Describe),
                _ => return Ok(false),
            },
            _ => return Ok(false),
        };
        if !self.portals.is_empty() && self.portals.contains_key(portal) {
            return Ok(false);
        }
        if self.portal_shards.get(portal).is_some_and(|e| e != self.endpoint) {
            return Ok(false);
        }
        self.send(&frame.bytes, Some(expect));
        Ok(true)
    }

    async fn forward_portal(
        &mut self,
        bound_on: Option<Endpoint>,
        frame: Frame,
        expect: Expect,
    ) -> Result<(), End> {
        let endpoint = bound_on.unwrap_or_else(|| self.preferred());
        if !self.enter(endpoint, true).await? {
            return Ok(());
        }
        self.send(&frame.bytes, Some(expect));
        Ok(())
    }

    pub(super) async fn on_execute(&mut self, frame: Frame) -> Result<(), End> {
        let (portal, max_rows) = frontend::execute_max_rows(&frame).map_err(decode_error)?;
        if !self.portals.contains_key(portal) {
            let bound_on = self.portal_shards.get(portal);
            return self.forward_portal(bound_on, frame, Expect::Execute).await;
        }
        let name = portal.to_owned();
        Box::pin(self.execute_portal(&name, usize::try_from(max_rows).unwrap_or(0))).await
    }

    async fn execute_portal(&mut self, name: &str, max_rows: usize) -> Result<(), End> {
        if let Some(chunks) = self.portals.get_mut(name).and_then(|p| p.fetched.as_mut()) {
            let reply = chunks.next(max_rows);
            self.synthetic(reply);
            return Ok(());
        }
        if !self.answer_waiting_parses().await? {
            return Ok(());
        }
        let Some(p) = self.portals.get(name) else { return Ok(()) };
        let query = p.query.clone();
        let types = p.param_types.clone();
        let formats = p.formats.clone();
        let values_owned: Vec<Option<Bytes>> = p.values.clone();
        let result_formats = p.result_formats.clone();
        let values: Vec<Option<&[u8]>> = values_owned.iter().map(|v| v.as_deref()).collect();
        let kind = match &p.kind {
            PortalKind::ShowRoute(text) => {
                let mut out = BytesMut::new();
                let mut rows = 0;
                for line in text.lines() {
                    backend::text_data_row(&mut out, &[line]);
                    rows += 1;
                }
                backend::command_complete(&mut out, &format!("SELECT {rows}"));
                self.synthetic(out.freeze());
                return Ok(());
            }
            &PortalKind::Complete { tag, ends_block } => {
                let mut out = BytesMut::new();
                backend::command_complete(&mut out, tag);
                self.synthetic(out.freeze());
                if ends_block {
                    self.tx = crate::protocol::backend::TxStatus::Idle;
                    self.block_ended();
                }
                return Ok(());
            }
            PortalKind::Scatter { endpoints, scatter } => (endpoints.clone(), Some(scatter.clone()), None),
            PortalKind::Broadcast { endpoints } => (endpoints.clone(), None, None),
            PortalKind::Insert { groups, split, ids } => (
                groups.iter().map(|(e, _)| *e).collect(),
                None,
                Some((groups.clone(), split.clone(), ids.clone())),
            ),
        };
        let (endpoints, scatter, insert) = kind;
        if let Some(scatter) = scatter {
            let shard_formats = result_formats.clone();
            let request = LegRequest::Extended {
                sql: &scatter.sql,
                param_types: &types,
                formats: &formats,
                values: &values,
                result_formats: &shard_formats,
                describe_only: false,
            };
            let requests: Vec<LegRequest<'_>> = endpoints.iter().map(|_| request.clone()).collect();
            let mut combine = match self.combiner(&scatter, result_formats.clone(), false) {
                Ok(c) => c,
                Err(e) => {
                    self.refuse(e, true);
                    return Ok(());
                }
            };
            return self
                .run_portal(name, &endpoints, &requests, combine.as_mut(), max_rows, scatter.write)
                .await;
        }
        if let Some((groups, split, ids)) = insert {
            let rows = InsertRows { groups: &groups, split: &split, ids: ids.as_deref() };
            return self
                .execute_insert(name, max_rows, rows, &types, &formats, &values, &result_formats)
                .await;
        }
        let request = LegRequest::Extended {
            sql: &query,
            param_types: &types,
            formats: &formats,
            values: &values,
            result_formats: &result_formats,
            describe_only: false,
        };
        let requests: Vec<LegRequest<'_>> = endpoints.iter().map(|_| request.clone()).collect();
        self.run_portal(name, &endpoints, &requests, &mut First::new(false), max_rows, true).await
    }

    /// Runs a router portal's fan-out. With a row limit the whole result is run and kept
    /// (at most `max_buffered_rows` rows) and handed out in chunks, as PostgreSQL runs a
    /// portal; a write runs completely at the first Execute and its final CommandComplete
    /// carries its whole count (`DELETE 20`), as in PostgreSQL.
    async fn run_portal(
        &mut self,
        name: &str,
        endpoints: &[Endpoint],
        requests: &[LegRequest<'_>],
        combine: &mut dyn Combine,
        max_rows: usize,
        write: bool,
    ) -> Result<(), End> {
        if max_rows == 0 {
            self.run_fan_out(endpoints, requests, combine, true).await?;
            if let Some(p) = self.portals.get_mut(name) {
                // Run to completion: a later Execute of the portal returns no rows.
                p.fetched = Some(Chunks::exhausted("SELECT"));
            }
            return Ok(());
        }
        let limit = self.shared.config.routing.max_buffered_rows;
        let mut capture = Capture::new(combine, limit);
        let skipping = self.client_skip;
        self.run_fan_out(endpoints, requests, &mut capture, true).await?;
        if skipping || self.client_skip {
            // The fan-out failed (its error went to the client) or never ran.
            return Ok(());
        }
        let mut chunks = capture.into_chunks();
        if write {
            chunks = chunks.with_whole_tag();
        }
        let reply = chunks.next(max_rows);
        if let Some(p) = self.portals.get_mut(name) {
            p.fetched = Some(chunks);
        }
        self.synthetic(reply);
        Ok(())
    }

    /// A split INSERT through the extended protocol: each shard gets its rows, with the
    /// placeholders they use renumbered and only those parameters bound.
    #[allow(clippy::too_many_arguments)]
    async fn execute_insert(
        &mut self,
        name: &str,
        max_rows: usize,
        rows: InsertRows<'_>,
        types: &Bytes,
        formats: &[i16],
        values: &[Option<&[u8]>],
        result_formats: &[i16],
    ) -> Result<(), End> {
        let InsertRows { groups, split, ids } = rows;
        let oids = param_oids(types);
        struct LegParams<'v> {
            sql: String,
            types: Bytes,
            formats: Vec<i16>,
            values: Vec<Option<&'v [u8]>>,
        }
        let mut per_leg = Vec::with_capacity(groups.len());
        for (_, rows) in groups {
            let (sql, map) = Self::insert_sql(split, rows, ids);
            let pick = |n: &usize| n.checked_sub(1);
            per_leg.push(LegParams {
                sql,
                types: encode_param_oids(
                    &map.iter()
                        .map(|n| pick(n).and_then(|i| oids.get(i)).copied().unwrap_or(0))
                        .collect::<Vec<_>>(),
                ),
                formats: map
                    .iter()
                    .map(|n| pick(n).and_then(|i| formats.get(i)).copied().unwrap_or(0))
                    .collect(),
                values: map.iter().map(|n| pick(n).and_then(|i| values.get(i)).copied().flatten()).collect(),
            });
        }
        let requests: Vec<LegRequest<'_>> = per_leg
            .iter()
            .map(|l| LegRequest::Extended {
                sql: &l.sql,
                param_types: &l.types,
                formats: &l.formats,
                values: &l.values,
                result_formats,
                describe_only: false,
            })
            .collect();
        let endpoints: Vec<Endpoint> = groups.iter().map(|(e, _)| *e).collect();
        let rows_of: Vec<Vec<usize>> = groups.iter().map(|(_, r)| r.clone()).collect();
        if split.returning {
            self.run_portal(name, &endpoints, &requests, &mut Reorder::new(rows_of, false), max_rows, true)
                .await
        } else {
            self.run_portal(name, &endpoints, &requests, &mut Concat::new(false), max_rows, true).await
        }
    }

    pub(super) async fn on_close(&mut self, frame: Frame) -> Result<(), End> {
        let c = DescribeOrClose::decode(&frame).map_err(decode_error)?;
        let router_portal =
            c.target == Target::Portal && !self.portals.is_empty() && self.portals.remove(c.name).is_some();
        let named_statement = c.target == Target::Statement && !c.name.is_empty() && self.transaction_mode();
        if !self.answer_waiting_parses().await? {
            return Ok(());
        }
        if c.target == Target::Portal && !router_portal {
            if let Some(endpoint) = self.portal_shards.remove(c.name) {
                if !self.enter(endpoint, true).await? {
                    return Ok(());
                }
                self.send(&frame.bytes, Some(Expect::Close));
                return Ok(());
            }
        }
        if router_portal || named_statement || self.backend.is_none() {
            // Global statements stay prepared on backends for other clients; closing a portal
            // or statement that no backend holds is a no-op in PostgreSQL too.
            if named_statement {
                self.statements.remove(c.name);
            }
            let mut out = BytesMut::new();
            backend::close_complete(&mut out);
            self.synthetic(out.freeze());
            return Ok(());
        }
        self.send(&frame.bytes, Some(Expect::Close));
        Ok(())
    }

    pub(super) async fn on_sync(&mut self, frame: Frame) -> Result<(), End> {
        self.client_skip = false;
        if !self.deferred.is_empty() {
            let endpoint = self.preferred();
            if !self.enter(endpoint, true).await? {
                self.client_skip = false;
            }
        }
        if self.tx == crate::protocol::backend::TxStatus::Idle && !self.portals.is_empty() {
            self.portals.clear();
        }
        if self.backend.is_some() {
            self.send(&frame.bytes, Some(Expect::Sync));
        } else {
            let mut out = BytesMut::new();
            backend::ready_for_query(&mut out, self.tx);
            self.synthetic(out.freeze());
        }
        Ok(())
    }

    pub(super) async fn on_flush(&mut self, frame: Frame) -> Result<(), End> {
        if !self.deferred.is_empty() {
            let endpoint = self.preferred();
            if !self.enter(endpoint, true).await? {
                return Ok(());
            }
        }
        if self.backend.is_some() {
            self.to_backend.extend_from_slice(&frame.bytes);
        }
        Ok(())
    }
}
