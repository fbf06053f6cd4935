//! Pass-through fast paths: a simple Query, or a whole extended-protocol batch, that the
//! router has nothing to decide for goes to the backend in one copy, read in place from the
//! client buffer, without the general path's per-message work.
//!
//! That holds when one shard serves everything, the statement needs none of the router's own
//! handling (no session effect to track, no SHOW ROUTE), and nothing waits to be sent before
//! it. Anything else takes the general path, which handles every case these do.
//!
//! Most extended-protocol traffic is a driver running one statement: Parse of the unnamed
//! statement (or not, when its text is the one parsed last), Bind of the unnamed portal (or of
//! a named statement already prepared on the backend), Describe, Execute, Sync, all in one
//! read. Such a batch is expected back as one entry ([`Expect::Batch`]) that ends at its
//! ReadyForQuery. A batch with any other message, or whose Sync has not arrived yet, takes the
//! general path message by message.

use std::sync::Arc;

use bytes::Buf;

use super::classify::classify_bytes;
use super::simple::is_show_route;
use super::statements::StatementDef;
use super::{End, Session, Unnamed, UnnamedText};
use crate::protocol::frame::{peek_header, HEADER_LEN};
use crate::protocol::frontend::{self, tag, Bind, DescribeOrClose, Parse, Target};
use crate::session::pending::Expect;

/// What a batch taken whole needs done once its backend is known.
struct Scanned {
    /// Bytes of the batch, through its Sync.
    len: usize,
    /// The batch's Parse, when it has one (first, of the unnamed statement).
    parse: Option<Arc<UnnamedText>>,
    /// Binds of the unnamed statement in the batch (for the statement counter).
    binds: usize,
    /// A Bind or a statement Describe uses the unnamed statement parsed before the batch.
    uses_earlier_parse: bool,
    /// The batch's one Bind of a named statement, if any.
    named: Option<NamedBind>,
}

/// A Bind of one of the client's named statements: in transaction pooling it goes to the
/// backend under the statement's global name, which must be prepared there already.
struct NamedBind {
    /// Where the Bind starts in the batch, its length, and where its parameter section
    /// starts.
    at: usize,
    len: usize,
    rest_at: usize,
    def: Arc<StatementDef>,
}

impl Session {
    /// Forwards the simple Query at the front of the client buffer if it qualifies (see the
    /// module). Returns false, having consumed nothing, when it must take the general path.
    pub(super) fn pass_query(&mut self) -> Result<bool, End> {
        if self.cbuf.first() != Some(&tag::QUERY)
            || !self.deferred.is_empty()
            || self.client_skip
            || self.in_copy
            || !self.lookup_tx.is_empty()
        {
            return Ok(false);
        }
        let Ok(Some((_, len))) = peek_header(&self.cbuf, self.max_message) else { return Ok(false) };
        self.refresh_topology();
        let Some(endpoint) = self.topology.single_endpoint() else { return Ok(false) };
        let Some(body) = self.cbuf.get(HEADER_LEN..len) else { return Ok(false) };
        let Ok(sql) = frontend::query_body_text(body) else { return Ok(false) };
        if is_show_route(sql) {
            return Ok(false);
        }
        let (kind, effects) = classify_bytes(sql);
        if self.unsupported(&effects).is_some() {
            return Ok(false);
        }
        let Some(entered) = self.enter_now(endpoint, false) else { return Ok(false) };
        if !entered? {
            return Ok(false);
        }
        self.shared.metrics.statement(kind);
        self.to_backend.extend_from_slice(&self.cbuf[..len]);
        self.cbuf.advance(len);
        self.sent(Expect::Query);
        self.apply_effects(&effects);
        Ok(true)
    }

    /// Forwards the batch at the front of the client buffer in one piece if it qualifies (see
    /// the module). Returns false, having consumed nothing, when it must take the general
    /// path.
    pub(super) fn pass_batch(&mut self) -> Result<bool, End> {
        if !matches!(self.cbuf.first(), Some(&(tag::PARSE | tag::BIND)))
            || !self.deferred.is_empty()
            || self.client_skip
            || self.in_copy
            || !self.portals.is_empty()
            || !self.others.is_empty()
        {
            return Ok(false);
        }
        self.refresh_topology();
        let Some(endpoint) = self.topology.single_endpoint() else { return Ok(false) };
        let Some(scanned) = self.scan_batch() else { return Ok(false) };
        let Some(entered) = self.enter_now(endpoint, true) else { return Ok(false) };
        if !entered? {
            return Ok(false);
        }
        let Some(pid) = self.backend.as_ref().map(|b| b.cancel.pid) else { return Ok(false) };
        if scanned.uses_earlier_parse
            && self.unnamed.as_ref().is_none_or(|u| u.parsed_on != Some((endpoint, pid)))
        {
            // The statement must be parsed here first: the general path injects the Parse.
            return Ok(false);
        }
        let renamed = match &scanned.named {
            Some(n) if self.transaction_mode() => {
                if !self.backend.as_ref().is_some_and(|b| b.prepared.contains(&n.def.id)) {
                    // Not prepared on this backend yet: the general path injects the Parse.
                    return Ok(false);
                }
                Some(n)
            }
            _ => None,
        };
        if let Some(n) = &scanned.named {
            self.shared.metrics.statement(n.def.kind);
        }
        if let Some(text) = scanned.parse {
            self.unnamed_kind = text.kind;
            self.unnamed = Some(Unnamed { text, parsed_on: Some((endpoint, pid)) });
        }
        for _ in 0..scanned.binds {
            self.shared.metrics.statement(self.unnamed_kind);
        }
        if scanned.binds > 0 || scanned.named.is_some() {
            self.portal_shards.insert("", endpoint);
        }
        match renamed {
            Some(n) => {
                let (batch, out) = (&self.cbuf[..scanned.len], &mut self.to_backend);
                out.extend_from_slice(&batch[..n.at]);
                frontend::put_bind(out, "", &n.def.name, &batch[n.rest_at..n.at + n.len]);
                out.extend_from_slice(&batch[n.at + n.len..]);
            }
            None => self.to_backend.extend_from_slice(&self.cbuf[..scanned.len]),
        }
        self.cbuf.advance(scanned.len);
        self.sent(Expect::Batch);
        Ok(true)
    }

    /// Reads the batch at the front of the client buffer without taking it. `None` unless it
    /// is complete and every message in it can be forwarded as it is.
    fn scan_batch(&mut self) -> Option<Scanned> {
        let Session { cbuf, unnamed, recent_texts, max_message, statements, .. } = self;
        let earlier = unnamed.as_ref();
        let mut pos = 0;
        let mut parse = None;
        let mut binds = 0;
        let mut uses_earlier_parse = false;
        let mut bound = false;
        let mut named = None;
        loop {
            let (t, len) = peek_header(&cbuf[pos..], *max_message).ok()??;
            let body = cbuf.get(pos + HEADER_LEN..pos + len)?;
            match t {
                tag::PARSE if pos == 0 => {
                    let p = Parse::from_body(body).ok()?;
                    if !p.name.is_empty() {
                        return None;
                    }
                    let text = recent_texts.text_of(earlier, &p).ok()?;
                    if !text.effects.is_empty() || is_show_route(text.query.as_bytes()) {
                        return None;
                    }
                    parse = Some(text);
                }
                tag::BIND => {
                    let b = Bind::from_body(body).ok()?;
                    if !b.portal.is_empty() {
                        return None;
                    }
                    if !b.statement.is_empty() {
                        let def = statements.get(b.statement)?;
                        if named.is_some() || is_show_route(def.query.as_bytes()) {
                            return None;
                        }
                        let rest_at = pos + HEADER_LEN + b.rest_offset();
                        named = Some(NamedBind { at: pos, len, rest_at, def: def.clone() });
                    } else if parse.is_none() {
                        if is_show_route(earlier?.text.query.as_bytes()) {
                            return None;
                        }
                        uses_earlier_parse = true;
                        binds += 1;
                    } else {
                        binds += 1;
                    }
                    bound = true;
                }
                tag::DESCRIBE => {
                    let d = DescribeOrClose::from_body(t, body).ok()?;
                    if !d.name.is_empty() {
                        return None;
                    }
                    match d.target {
                        Target::Portal if bound => {}
                        Target::Statement if parse.is_some() => {}
                        Target::Statement if earlier.is_some() => uses_earlier_parse = true,
                        _ => return None,
                    }
                }
                tag::EXECUTE => {
                    let (portal, _) = frontend::execute_from_body(body).ok()?;
                    if !portal.is_empty() || !bound {
                        return None;
                    }
                }
                tag::SYNC => {
                    return Some(Scanned { len: pos + len, parse, binds, uses_earlier_parse, named });
                }
                _ => return None,
            }
            pos += len;
        }
    }
}
