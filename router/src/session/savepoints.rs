//! Savepoints in a transaction block that spans several shards.
//!
//! The router keeps the names of the block's open savepoints in order
//! ([`Session::savepoints`]). `SAVEPOINT`, `RELEASE` and `ROLLBACK TO` go to every backend
//! the block holds (the other shards and the lookup transactions first, then the active
//! backend with the client's own statement, whose reply the client sees), so `ROLLBACK TO`
//! undoes the work done since the savepoint on every shard. A shard that joins the block
//! later gets its BEGIN followed by every open savepoint ([`Session::begin_sql`]), so rolling
//! back to one of them undoes that shard's work too. Names resolve as in PostgreSQL: to the
//! most recent savepoint of that name; `RELEASE` drops it and every later one, `ROLLBACK TO`
//! keeps it and drops the later ones.
//!
//! - A name the block does not have is `3B001`, as in PostgreSQL (reported by the shard
//!   when the block holds one, by the router otherwise).
//! - While the block has reached no shard, the router answers itself.
//! - When a shard's part of the block was lost (its connection broke, or a lookup
//!   transaction failed), `ROLLBACK TO` is refused: only `ROLLBACK` can end the block, since
//!   rolling back to a savepoint would silently drop that shard's earlier work.

use planner::TxControl;

use super::{own_statement_error, Session, Stop};
use crate::error::{sqlstate, ClientError};
use crate::pool::{BackendError, Pooled};
use crate::protocol::backend::TxStatus;

/// What the caller does with the client's savepoint statement.
pub(super) enum SavepointStep {
    /// Send it to the active backend (or the preferred shard).
    Forward,
    /// The router answered it: reply with this command tag.
    Answered(&'static str),
}

/// `name` as a quoted identifier (savepoint names are kept folded, as PostgreSQL keeps them).
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn savepoint_sql(tc: &TxControl) -> Option<String> {
    match tc {
        TxControl::Savepoint(n) => Some(format!("SAVEPOINT {}", quoted(n))),
        TxControl::Release(n) => Some(format!("RELEASE SAVEPOINT {}", quoted(n))),
        TxControl::RollbackTo(n) => Some(format!("ROLLBACK TO SAVEPOINT {}", quoted(n))),
        _ => None,
    }
}

/// PostgreSQL's command tag for a savepoint statement.
fn tag(tc: &TxControl) -> &'static str {
    match tc {
        TxControl::Savepoint(_) => "SAVEPOINT",
        TxControl::Release(_) => "RELEASE",
        _ => "ROLLBACK",
    }
}

fn lost_part() -> ClientError {
    ClientError::new(
        "aborted_transaction",
        sqlstate::IN_FAILED_SQL_TRANSACTION,
        "current transaction is aborted, commands ignored until end of transaction block",
    )
    .with_detail(
        "pg-router lost a shard's part of this transaction; rolling back to a savepoint would drop that \
         part's earlier work, so only ROLLBACK can end the transaction.",
    )
}

impl Session {
    /// The SQL that opens the block on a shard that joins it: its BEGIN, then every open
    /// savepoint.
    pub(super) fn begin_sql(&self) -> String {
        self.with_savepoints(self.begin.as_deref().unwrap_or("BEGIN"))
    }

    /// `begin` followed by every open savepoint (a newline ends a trailing `--` comment).
    pub(super) fn with_savepoints(&self, begin: &str) -> String {
        let mut sql = begin.to_owned();
        for name in &self.savepoints {
            sql.push_str("\n;SAVEPOINT ");
            sql.push_str(&quoted(name));
        }
        sql
    }

    /// Forgets the state of the transaction block that just ended.
    pub(super) fn block_ended(&mut self) {
        self.begin = None;
        self.savepoints.clear();
        self.block_lost = false;
    }

    /// Updates the open savepoints for a savepoint statement that succeeds. Returns false for
    /// `RELEASE`/`ROLLBACK TO` of a name the block does not have.
    pub(super) fn note_savepoint(&mut self, tc: &TxControl) -> bool {
        let at = |v: &Vec<String>, n: &str| v.iter().rposition(|s| s == n);
        match tc {
            TxControl::Savepoint(n) => self.savepoints.push(n.clone()),
            TxControl::Release(n) => match at(&self.savepoints, n) {
                Some(i) => self.savepoints.truncate(i),
                None => return false,
            },
            TxControl::RollbackTo(n) => match at(&self.savepoints, n) {
                Some(i) => self.savepoints.truncate(i + 1),
                None => return false,
            },
            _ => {}
        }
        true
    }

    /// Runs a savepoint statement on every backend of the block except the active one, and
    /// says what to do with the client's statement (see the module doc).
    pub(super) async fn spread_savepoint(&mut self, tc: &TxControl) -> Result<SavepointStep, Stop> {
        let Some(sql) = savepoint_sql(tc) else { return Ok(SavepointStep::Forward) };
        if self.tx == TxStatus::Idle {
            // Outside a block the shard answers 25P01, as PostgreSQL does.
            return Ok(SavepointStep::Forward);
        }
        let is_rollback = matches!(tc, TxControl::RollbackTo(_));
        if let TxControl::Release(n) | TxControl::RollbackTo(n) = tc {
            if !self.savepoints.contains(n) {
                if self.others.is_empty() && self.lookup_tx.is_empty() {
                    return Ok(SavepointStep::Forward);
                }
                // Several shards: say it here rather than let one shard decide alone.
                return Err(Stop::Refuse(ClientError::new(
                    "savepoint",
                    sqlstate::INVALID_SAVEPOINT_SPECIFICATION,
                    format!("savepoint \"{n}\" does not exist"),
                )));
            }
        }
        if self.backend.is_none() && self.others.is_empty() && self.lookup_tx.is_empty() {
            // The block has reached no shard: nothing to undo anywhere.
            if self.tx == TxStatus::Failed && !is_rollback {
                return Ok(SavepointStep::Forward);
            }
            self.note_savepoint(tc);
            self.tx = TxStatus::InTransaction;
            return Ok(SavepointStep::Answered(tag(tc)));
        }
        if self.others.is_empty() && self.lookup_tx.is_empty() {
            // One shard: it alone answers; the names are kept for shards that join later.
            if self.block_lost && is_rollback {
                return Err(Stop::Refuse(lost_part()));
            }
            if self.tx != TxStatus::Failed || is_rollback {
                self.note_savepoint(tc);
            }
            return Ok(SavepointStep::Forward);
        }
        // Replies still due on the active backend may fail the block: read them first.
        self.drain().await?;
        if self.block_lost && is_rollback {
            return Err(Stop::Refuse(lost_part()));
        }
        if self.tx == TxStatus::Failed && !is_rollback {
            // The active shard answers 25P02 (or the router does, when none is active).
            return Ok(SavepointStep::Forward);
        }
        if self.backend.is_none() {
            // After a fan-out no backend is active: one of the others takes the client's
            // statement (and is left out of the spread below).
            if let Some((endpoint, b)) = self.others.pop() {
                self.backend = Some(b);
                self.endpoint = endpoint;
                self.set_cancel_target();
            }
        }
        let mut failure = None;
        for list in [&mut self.others, &mut self.lookup_tx] {
            let mut kept = Vec::with_capacity(list.len());
            for (endpoint, mut conn) in list.drain(..) {
                if failure.is_some() {
                    kept.push((endpoint, conn));
                    continue;
                }
                match conn.query_in_transaction(&sql).await {
                    Ok(_) => kept.push((endpoint, conn)),
                    Err(e) => {
                        if matches!(e, BackendError::Server { .. }) {
                            kept.push((endpoint, conn));
                        } else {
                            drop(Pooled::take(conn));
                            self.block_lost = true;
                        }
                        failure = Some(spread_error(e));
                    }
                }
            }
            *list = kept;
        }
        if let Some(e) = failure {
            // A shard did not take the savepoint: the block cannot go on consistently.
            self.block_lost = true;
            return Err(Stop::Refuse(e));
        }
        self.note_savepoint(tc);
        if self.backend.is_none() {
            // Only lookup transactions were held; they took the statement.
            self.tx = TxStatus::InTransaction;
            return Ok(SavepointStep::Answered(tag(tc)));
        }
        Ok(SavepointStep::Forward)
    }
}

fn spread_error(e: BackendError) -> ClientError {
    own_statement_error(e, "savepoint", "Reported by shard {shard}, which holds part of this transaction.")
}
