//! What the router expects back from the backend, in order.
//!
//! Every forwarded or injected message that produces a response gets an entry; the backend's
//! output is matched against the front entry. This is how the router knows when a transaction's
//! last response has arrived (the backend can be released), which responses to its own injected
//! messages to hide from the client, and where to slot responses it makes up itself (a
//! CloseComplete for a statement it never closed on the backend).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use super::statements::StatementDef;
use crate::protocol::backend::tag;

#[derive(Debug)]
pub enum Expect {
    /// A client Parse of a named statement (forwarded under its global name) or a Parse the
    /// router injected (`hide` = true) so that a Bind/Describe finds its statement.
    Parse {
        def: Option<Arc<StatementDef>>,
        client_name: Option<String>,
        hide: bool,
    },
    Bind,
    /// A Bind the router injected; its BindComplete is hidden.
    HiddenBind,
    Describe,
    Execute,
    Close,
    Sync,
    /// A whole extended-protocol batch forwarded as it came, up to and including its Sync,
    /// none of whose replies the router hides or slots anything between (see
    /// `Session::pass_batch`). Like a Sync, it ends at ReadyForQuery. Not sent once the router
    /// has seen the backend enter copy mode; one whose Execute starts a COPY becomes an
    /// `Execute` entry (see `Pending::on_copy_in`).
    Batch,
    /// A Sync the router injected to finish a batch on this backend before moving to another
    /// shard; its ReadyForQuery is hidden.
    HiddenSync,
    /// A simple Query or a FunctionCall: ends at ReadyForQuery.
    Query,
    /// A simple Query the router injected (the transaction's BEGIN on a shard that joins it):
    /// everything it produces is hidden.
    HiddenQuery,
    /// A simple Query the router injected to abort the backend's transaction after an error
    /// the router reported itself: everything it produces is hidden, its error included.
    SilentQuery,
    /// Bytes made up by the router, emitted when they reach the front.
    Synthetic(Bytes),
    /// The client ended a COPY FROM STDIN (CopyDone/CopyFail). Not answered by itself; it
    /// marks which Syncs the backend ignored because they arrived in copy-in mode.
    CopyEnd,
}

impl Expect {
    /// Whether `tag` is the last backend message answering this entry.
    fn ends_with(&self, t: u8) -> bool {
        match self {
            Expect::Parse { .. } => t == tag::PARSE_COMPLETE,
            Expect::Bind | Expect::HiddenBind => t == tag::BIND_COMPLETE,
            Expect::Describe => t == tag::ROW_DESCRIPTION || t == tag::NO_DATA,
            Expect::Execute => {
                t == tag::COMMAND_COMPLETE || t == tag::EMPTY_QUERY || t == tag::PORTAL_SUSPENDED
            }
            Expect::Close => t == tag::CLOSE_COMPLETE,
            Expect::Sync
            | Expect::HiddenSync
            | Expect::Batch
            | Expect::Query
            | Expect::HiddenQuery
            | Expect::SilentQuery => t == tag::READY_FOR_QUERY,
            Expect::Synthetic(_) | Expect::CopyEnd => false,
        }
    }

    pub fn is_extended(&self) -> bool {
        !matches!(
            self,
            Expect::Query
                | Expect::HiddenQuery
                | Expect::SilentQuery
                | Expect::Synthetic(_)
                | Expect::CopyEnd
        )
    }

    fn is_sync(&self) -> bool {
        matches!(self, Expect::Sync | Expect::HiddenSync)
    }
}

/// What to do with one backend message.
#[derive(Debug, PartialEq, Eq)]
pub enum Disposition {
    Forward,
    Hide,
}

/// A Parse that did not take effect (it failed or was skipped after an error): the caller must
/// forget the statement on the backend (and the client's name for it).
#[derive(Debug)]
pub struct UndoneParse {
    pub def: Arc<StatementDef>,
    pub client_name: Option<String>,
}

#[derive(Debug, Default)]
pub struct Pending {
    queue: VecDeque<Expect>,
    /// After an error in the extended protocol the backend ignores everything up to Sync; set
    /// when the error came before the Sync was sent.
    skipping: bool,
    /// The backend is in copy-in mode and the client has not ended the COPY yet: PostgreSQL
    /// ignores Sync in copy-in mode, so Syncs sent now get no ReadyForQuery.
    copy_in: bool,
    /// An error made the backend skip to a Sync the router injected: the client's messages
    /// after that point must be skipped by the router, up to the client's own Sync.
    error_before_hidden_sync: bool,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Records a forwarded message. Extended-protocol messages sent while the backend is
    /// skipping to Sync produce nothing and are not recorded.
    pub fn push(&mut self, e: Expect) -> Option<UndoneParse> {
        match e {
            Expect::CopyEnd if self.copy_in => {
                self.copy_in = false;
                return None;
            }
            // Nothing outstanding can start a COPY (the router itself answered the client's
            // COPY, e.g. refused it): the backend ignores the CopyDone and a marker would stay
            // at the front of the queue forever. asyncpg sends its COPY data and CopyDone
            // without waiting for CopyInResponse, so they arrive after such a refusal.
            Expect::CopyEnd
                if !self
                    .queue
                    .iter()
                    .any(|e| matches!(e, Expect::Query | Expect::Execute | Expect::Batch)) =>
            {
                return None;
            }
            Expect::Sync | Expect::HiddenSync if self.copy_in => return None,
            _ => {}
        }
        if self.skipping {
            match e {
                // The backend answers a batch's Sync (and skips what comes before it).
                Expect::Sync | Expect::HiddenSync | Expect::Batch => self.skipping = false,
                Expect::Synthetic(_) => return None,
                Expect::Parse { def: Some(def), client_name, .. } => {
                    return Some(UndoneParse { def, client_name })
                }
                ref other if other.is_extended() => return None,
                _ => {}
            }
        }
        self.queue.push_back(e);
        None
    }

    /// Whether the entry at the front ends only at ReadyForQuery and hides nothing: until then
    /// every reply but an error or the start of a COPY goes to the client as it is.
    #[inline]
    pub fn forwards_until_ready(&self) -> bool {
        matches!(self.queue.front(), Some(Expect::Batch | Expect::Sync | Expect::Query))
    }

    /// Whether something made up by the router waits at the front (cheaper to ask than
    /// [`Pending::pop_synthetic`], which the answer is usually no to).
    #[inline]
    pub fn synthetic_at_front(&self) -> bool {
        matches!(self.queue.front(), Some(Expect::Synthetic(_)))
    }

    /// Whether something made up by the router is ready to go out now; returns its bytes.
    pub fn pop_synthetic(&mut self) -> Option<Bytes> {
        if !matches!(self.queue.front(), Some(Expect::Synthetic(_))) {
            return None;
        }
        match self.queue.pop_front() {
            Some(Expect::Synthetic(b)) => {
                self.drop_markers();
                Some(b)
            }
            _ => None,
        }
    }

    /// Matches one backend message against the queue.
    pub fn on_backend(&mut self, t: u8, undone: &mut Vec<UndoneParse>) -> Disposition {
        if matches!(self.queue.front(), Some(Expect::SilentQuery)) {
            if t == tag::READY_FOR_QUERY {
                self.queue.pop_front();
                self.drop_markers();
            }
            return Disposition::Hide;
        }
        if t == tag::ERROR_RESPONSE {
            self.copy_in = false;
            let d = self.on_error(undone);
            self.drop_markers();
            return d;
        }
        if t == tag::COPY_IN_RESPONSE {
            self.on_copy_in();
            return Disposition::Forward;
        }
        let Some(front) = self.queue.front() else {
            return Disposition::Forward;
        };
        let hidden_query = matches!(front, Expect::HiddenQuery);
        if !front.ends_with(t) {
            return if hidden_query { Disposition::Hide } else { Disposition::Forward };
        }
        let hide = matches!(
            front,
            Expect::Parse { hide: true, .. } | Expect::HiddenBind | Expect::HiddenSync | Expect::HiddenQuery
        );
        self.queue.pop_front();
        self.drop_markers();
        if hide {
            Disposition::Hide
        } else {
            Disposition::Forward
        }
    }

    /// COPY FROM STDIN started: Syncs the client sent before ending the COPY are ignored by
    /// the backend, so stop expecting replies to them.
    fn on_copy_in(&mut self) {
        let end = self.queue.iter().position(|e| matches!(e, Expect::CopyEnd));
        let limit = end.unwrap_or(self.queue.len());
        // A batch whose Execute started the COPY: its Sync is ignored likewise, so it now ends
        // where the COPY does, at CommandComplete (or an error).
        if let Some(front @ Expect::Batch) = self.queue.front_mut() {
            *front = Expect::Execute;
        }
        let mut i = 0;
        let mut removed = 0;
        self.queue.retain(|e| {
            let keep = i >= limit || !e.is_sync();
            i += 1;
            removed += usize::from(!keep);
            keep
        });
        match end {
            Some(at) => {
                self.queue.remove(at - removed);
            }
            None => self.copy_in = true,
        }
    }

    /// CopyEnd markers that reach the front have nothing left to mark.
    fn drop_markers(&mut self) {
        while matches!(self.queue.front(), Some(Expect::CopyEnd)) {
            self.queue.pop_front();
        }
    }

    /// The backend is skipping messages up to the next Sync after an error.
    pub fn is_skipping(&self) -> bool {
        self.skipping
    }

    /// Whether an error skipped to a Sync the router injected (cleared by reading it).
    pub fn take_error_before_hidden_sync(&mut self) -> bool {
        std::mem::take(&mut self.error_before_hidden_sync)
    }

    fn on_error(&mut self, undone: &mut Vec<UndoneParse>) -> Disposition {
        match self.queue.front() {
            None | Some(Expect::Query) => return Disposition::Forward,
            // The router's own BEGIN failed: the client sees the error (its statement that
            // follows fails too, as in an aborted transaction).
            Some(Expect::HiddenQuery) => return Disposition::Forward,
            _ => {}
        }
        // The backend skips every extended message up to the next Sync: drop their entries,
        // including made-up replies PostgreSQL itself would not have sent.
        while let Some(front) = self.queue.front() {
            if matches!(front, Expect::HiddenSync) {
                self.error_before_hidden_sync = true;
            }
            if front.is_sync() || matches!(front, Expect::Batch | Expect::Query | Expect::HiddenQuery) {
                return Disposition::Forward;
            }
            if let Some(Expect::Parse { def: Some(def), client_name, .. }) = self.queue.pop_front() {
                undone.push(UndoneParse { def, client_name });
            }
        }
        self.skipping = true;
        Disposition::Forward
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::session::statements::StatementRegistry;

    #[test]
    fn hides_injected_parse_and_releases_at_ready() {
        let reg = StatementRegistry::default();
        let def = reg.intern("select 1", &[0, 0]);
        let mut p = Pending::default();
        let mut undone = vec![];
        p.push(Expect::Parse { def: Some(def), client_name: None, hide: true });
        p.push(Expect::Bind);
        p.push(Expect::Execute);
        p.push(Expect::Sync);
        assert_eq!(p.on_backend(b'1', &mut undone), Disposition::Hide);
        assert_eq!(p.on_backend(b'2', &mut undone), Disposition::Forward);
        assert_eq!(p.on_backend(b'D', &mut undone), Disposition::Forward);
        assert_eq!(p.on_backend(b'C', &mut undone), Disposition::Forward);
        assert!(!p.is_empty());
        assert_eq!(p.on_backend(b'Z', &mut undone), Disposition::Forward);
        assert!(p.is_empty());
    }

    #[test]
    fn error_skips_to_sync_and_undoes_parses() {
        let reg = StatementRegistry::default();
        let a = reg.intern("select a", &[0, 0]);
        let b = reg.intern("select b", &[0, 0]);
        let mut p = Pending::default();
        let mut undone = vec![];
        p.push(Expect::Parse { def: Some(a), client_name: Some("s1".into()), hide: false });
        p.push(Expect::Synthetic(Bytes::from_static(b"3\0\0\0\x04")));
        p.push(Expect::Parse { def: Some(b), client_name: Some("s2".into()), hide: false });
        assert_eq!(p.on_backend(b'E', &mut undone), Disposition::Forward);
        assert_eq!(undone.len(), 2);
        assert!(p.is_empty());
        // Sent after the error but before Sync: skipped by the backend, so not expected.
        assert!(p.push(Expect::Bind).is_none());
        p.push(Expect::Sync);
        assert_eq!(p.len(), 1);
        p.on_backend(b'Z', &mut undone);
        assert!(p.is_empty());
        p.push(Expect::Bind);
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn simple_query_errors_do_not_skip() {
        let mut p = Pending::default();
        let mut undone = vec![];
        p.push(Expect::Query);
        p.push(Expect::Query);
        p.on_backend(b'E', &mut undone);
        assert_eq!(p.len(), 2);
        p.on_backend(b'Z', &mut undone);
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn syncs_during_copy_in_get_no_reply() {
        let mut undone = vec![];
        // tokio-postgres: Bind, Execute, Sync, then data, CopyDone, Sync.
        let mut p = Pending::default();
        p.push(Expect::Bind);
        p.push(Expect::Execute);
        p.push(Expect::Sync);
        p.on_backend(b'2', &mut undone);
        p.on_backend(b'G', &mut undone);
        p.push(Expect::CopyEnd);
        p.push(Expect::Sync);
        p.on_backend(b'C', &mut undone);
        p.on_backend(b'Z', &mut undone);
        assert!(p.is_empty());
        // Pipelined: CopyDone already sent when CopyInResponse arrives.
        let mut p = Pending::default();
        for e in [Expect::Bind, Expect::Execute, Expect::Sync, Expect::CopyEnd, Expect::Sync] {
            p.push(e);
        }
        for t in [b'2', b'G', b'C', b'Z'] {
            p.on_backend(t, &mut undone);
        }
        assert!(p.is_empty());
        // Simple-protocol COPY that fails before copy mode starts.
        let mut p = Pending::default();
        p.push(Expect::Query);
        p.push(Expect::CopyEnd);
        p.on_backend(b'E', &mut undone);
        p.on_backend(b'Z', &mut undone);
        assert!(p.is_empty());
    }

    #[test]
    fn copy_end_after_a_copy_the_router_answered_expects_nothing() {
        let mut undone = vec![];
        let refusal = || Expect::Synthetic(Bytes::from_static(b"E..Z.."));
        // Nothing outstanding: the refusal goes out at once; data and CopyDone follow.
        let mut p = Pending::default();
        p.push(refusal());
        assert!(p.pop_synthetic().is_some());
        p.push(Expect::CopyEnd);
        assert!(p.is_empty());
        // Pipelined behind a forwarded query: the marker leaves with the refusal.
        p.push(Expect::Query);
        p.push(refusal());
        p.push(Expect::CopyEnd);
        for t in [b'T', b'D', b'C', b'Z'] {
            p.on_backend(t, &mut undone);
        }
        assert!(p.pop_synthetic().is_some());
        assert!(p.is_empty());
        // A backend-side COPY that fails after the client's CopyDone arrived expects nothing
        // either once its error and ReadyForQuery are in.
        p.push(Expect::Query);
        p.on_backend(b'E', &mut undone);
        p.on_backend(b'Z', &mut undone);
        p.push(Expect::CopyEnd);
        assert!(p.is_empty());
    }

    #[test]
    fn injected_parse_and_bind_replies_are_hidden() {
        let mut undone = vec![];
        let mut p = Pending::default();
        p.push(Expect::Parse { def: None, client_name: None, hide: true });
        p.push(Expect::HiddenBind);
        p.push(Expect::Execute);
        p.push(Expect::Sync);
        assert_eq!(p.on_backend(tag::PARSE_COMPLETE, &mut undone), Disposition::Hide);
        assert_eq!(p.on_backend(tag::BIND_COMPLETE, &mut undone), Disposition::Hide);
        assert_eq!(p.on_backend(tag::ERROR_RESPONSE, &mut undone), Disposition::Forward);
        assert_eq!(p.on_backend(tag::READY_FOR_QUERY, &mut undone), Disposition::Forward);
        assert!(p.is_empty());
    }

    #[test]
    fn a_batch_ends_at_its_ready_for_query_through_errors_and_copy() {
        let mut undone = vec![];
        let mut p = Pending::default();
        p.push(Expect::Batch);
        assert!(p.forwards_until_ready());
        for t in [b'1', b'2', b'T', b'D', b'C'] {
            assert_eq!(p.on_backend(t, &mut undone), Disposition::Forward);
        }
        assert!(!p.is_empty());
        p.on_backend(b'Z', &mut undone);
        assert!(p.is_empty());
        // An error inside the batch: the backend skips to the batch's own Sync.
        p.push(Expect::Batch);
        p.push(Expect::Batch);
        assert_eq!(p.on_backend(tag::ERROR_RESPONSE, &mut undone), Disposition::Forward);
        assert!(!p.is_skipping());
        p.on_backend(b'Z', &mut undone);
        assert_eq!(p.len(), 1);
        p.on_backend(b'Z', &mut undone);
        assert!(p.is_empty());
        // An error before the Sync of an earlier unsynced Bind: skipping ends with the batch.
        p.push(Expect::Bind);
        p.on_backend(tag::ERROR_RESPONSE, &mut undone);
        assert!(p.is_skipping());
        p.push(Expect::Batch);
        assert!(!p.is_skipping());
        p.on_backend(b'Z', &mut undone);
        assert!(p.is_empty());
        // Its Execute starts a COPY: the batch's Sync is ignored, it ends with the COPY.
        p.push(Expect::Batch);
        p.on_backend(b'1', &mut undone);
        p.on_backend(tag::COPY_IN_RESPONSE, &mut undone);
        p.push(Expect::CopyEnd);
        p.push(Expect::Sync);
        p.on_backend(b'C', &mut undone);
        assert_eq!(p.len(), 1);
        p.on_backend(b'Z', &mut undone);
        assert!(p.is_empty());
    }

    #[test]
    fn synthetic_at_front_is_emitted() {
        let mut p = Pending::default();
        p.push(Expect::Synthetic(Bytes::from_static(b"x")));
        assert_eq!(p.pop_synthetic().as_deref(), Some(&b"x"[..]));
        assert!(p.is_empty());
    }
}
