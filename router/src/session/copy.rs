//! `COPY <sharded table> FROM STDIN`: every row goes to the shard of its sharding key.
//!
//! The router starts the client's COPY on every shard of the keyspace, answers the client with
//! one CopyInResponse, then reads the client's data itself: [`CopySplitter`] cuts it into rows
//! and reads each row's key, and each shard gets its rows in CopyData messages of up to
//! [`LEG_FLUSH`] bytes (the header and the binary trailer go to every shard). A shard's error
//! (bad data, a constraint) fails the whole COPY: the other shards get CopyFail, and the
//! client's remaining data is read and dropped as PostgreSQL does, until its CopyDone.
//!
//! Outside a transaction block the COPY runs in a transaction of its own on every shard,
//! committed one shard after the other when all succeeded (as a multi-shard COMMIT: not atomic
//! until two-phase commit), rolled back everywhere otherwise. Inside a block the shards join
//! the block, and an error fails it.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;

use bytes::{BufMut, Bytes, BytesMut};
use planner::CopyIn;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

use super::shards::end_transaction;
use super::{End, Session, Stop};
use crate::error::{sqlstate, ClientError};
use crate::exec::copy::{CopySplitter, Piece};
use crate::exec::fanout::tag_count;
use crate::exec::{Leg, Outcome};
use crate::pool::{BackendConn, BackendError, Pooled};
use crate::protocol::backend::{self, tag as btag, TxStatus};
use crate::protocol::frame::{next_frame, PG_MAX_MESSAGE_LEN};
use crate::protocol::frontend::{self, tag};
use crate::protocol::Frame;

/// A shard's pending rows are sent once this many bytes are buffered.
const LEG_FLUSH: usize = 64 * 1024;

/// What became of one shard's part.
#[derive(Default)]
struct LegEnd {
    /// The shard's ErrorResponse, as it sent it.
    error: Option<Bytes>,
    rows: u64,
    status: Option<TxStatus>,
    broken: bool,
    /// The shard answered the COPY with CopyInResponse (it waits for CopyDone or CopyFail).
    copying: bool,
}

impl Session {
    pub(super) async fn copy_in_query(&mut self, frame: Frame, text: &str, copy: &CopyIn) -> Result<(), End> {
        let endpoints = match self.topology.keyspace_endpoints(&copy.keyspace) {
            Ok(e) => e,
            Err(e) => return self.reject(e).await,
        };
        if let [endpoint] = endpoints[..] {
            return self.pass(frame, endpoint, &[]).await;
        }
        let own_tx = self.tx == TxStatus::Idle;
        let mut legs = match self.take_legs(&endpoints).await {
            Ok(l) => l,
            Err(Stop::Refuse(e)) => return self.reject(e).await,
            Err(Stop::End(e)) => return Err(e),
        };
        if own_tx {
            for leg in &mut legs {
                leg.begin = Some("BEGIN".to_owned());
            }
        }
        let mut ends: Vec<LegEnd> = legs.iter().map(|_| LegEnd::default()).collect();
        let started = self.start_copy(&mut legs, &mut ends, text, copy).await;
        let result = match started {
            Ok((response, position)) => {
                self.to_client.extend_from_slice(&response);
                let mut splitter = CopySplitter::new(
                    copy.format.clone(),
                    position,
                    copy.vindex.vindex.column_type(),
                    self.max_message,
                );
                self.stream_rows(&mut legs, &mut ends, &mut splitter, copy).await
            }
            Err(e) => Err(e),
        };
        let failure = match result {
            Err(Stop::End(e)) => {
                for leg in legs {
                    drop(Pooled::take(leg.conn));
                }
                self.set_cancel_target();
                return Err(e);
            }
            Err(Stop::Refuse(e)) => Some(e),
            Ok(()) => None,
        };
        // What a shard reported before being told how the COPY ends is the cause; a shard
        // told CopyFail only echoes it.
        let early_error = ends.iter().find_map(|e| e.error.clone());
        let any_error = failure.is_some() || early_error.is_some();
        let fail_msg =
            failure.as_ref().map_or("COPY failed on another shard", |e| e.message.as_str()).to_owned();
        for (leg, end) in legs.iter_mut().zip(ends.iter_mut()) {
            if end.status.is_some() || end.broken || !end.copying {
                continue;
            }
            if end.error.is_none() {
                // A shard that failed already left COPY (it ignores CopyDone/CopyFail).
                let mut out = BytesMut::new();
                if any_error {
                    encode_copy_fail(&mut out, &fail_msg);
                } else {
                    encode_copy_done(&mut out);
                }
                if leg.conn.stream.write_all(&out).await.is_err() {
                    end.broken = true;
                    continue;
                }
            }
            read_to_ready(&mut leg.conn, end).await;
        }
        let late_error = ends.iter().find_map(|e| e.error.clone());
        let lost = ends.iter().any(|e| e.broken);
        let mut error_frame = early_error
            .or_else(|| failure.as_ref().map(encode_error))
            .or(late_error)
            .or_else(|| lost.then(|| encode_error(&lost_shard())));
        let rows: u64 = ends.iter().map(|e| e.rows).sum();
        if own_tx {
            // The COPY's own transactions: commit all, or roll back all.
            let mut commit = error_frame.is_none();
            for (leg, end) in legs.iter_mut().zip(ends.iter_mut()) {
                if end.broken {
                    continue;
                }
                let sql = if commit { "COMMIT" } else { "ROLLBACK" };
                match end_transaction(&mut leg.conn, sql).await {
                    Ok(()) => end.status = Some(TxStatus::Idle),
                    Err(e) => {
                        end.broken = true;
                        if error_frame.is_none() {
                            error_frame = Some(encode_error(&e));
                        }
                        commit = false;
                    }
                }
            }
        }
        // A shard the COPY never reached has not joined the transaction block: hand it back.
        // One whose session settings were not replayed cannot serve the session any more.
        let mut kept_legs = Vec::with_capacity(legs.len());
        let mut kept_ends = Vec::with_capacity(ends.len());
        for (leg, mut end) in legs.into_iter().zip(ends) {
            if leg.begin.is_some() {
                drop(leg.conn);
                continue;
            }
            end.broken |= leg.settings.is_some();
            kept_legs.push(leg);
            kept_ends.push(end);
        }
        let (legs, ends) = (kept_legs, kept_ends);
        let failed = ends.iter().position(|e| e.error.is_some());
        let outcome = Outcome {
            status: if ends.iter().any(|e| e.status == Some(TxStatus::Failed)) {
                TxStatus::Failed
            } else if ends.iter().any(|e| e.status == Some(TxStatus::InTransaction)) {
                TxStatus::InTransaction
            } else {
                TxStatus::Idle
            },
            failed,
            broken: ends.iter().map(|e| e.broken).collect(),
            errored: error_frame.is_some(),
        };
        self.return_legs(legs, Some(&outcome));
        match error_frame {
            Some(f) => {
                self.shared.metrics.error("copy");
                self.to_client.extend_from_slice(&f);
            }
            None => backend::command_complete(&mut self.to_client, &format!("COPY {rows}")),
        }
        backend::ready_for_query(&mut self.to_client, self.tx);
        Ok(())
    }

    /// Opens every shard's part (its BEGIN and settings, then the COPY) and returns the
    /// CopyInResponse for the client and the sharding column's position in each row.
    async fn start_copy(
        &mut self,
        legs: &mut [Leg],
        ends: &mut [LegEnd],
        text: &str,
        copy: &CopyIn,
    ) -> Result<(Bytes, usize), Stop> {
        let mut position = copy.position;
        let mut response = None;
        for (i, leg) in legs.iter_mut().enumerate() {
            for sql in [leg.begin.take(), leg.settings.take()].into_iter().flatten() {
                if let Err(e) = leg.conn.query_in_transaction(&sql).await {
                    ends[i].broken = !matches!(e, BackendError::Server { .. });
                    return Err(Stop::Refuse(shard_error(e)));
                }
            }
            if position.is_none() {
                let sql = position_sql(&copy.table, &copy.column);
                match leg.conn.query_in_transaction(&sql).await {
                    Ok((rows, _)) => {
                        let p = rows.first().cloned().flatten().and_then(|p| p.parse().ok());
                        position = Some(p.ok_or_else(|| {
                            ClientError::new(
                                "copy",
                                sqlstate::UNDEFINED_COLUMN,
                                format!("pg-router: {} has no column {}", copy.table, copy.column),
                            )
                        })?);
                    }
                    Err(e) => {
                        ends[i].broken = !matches!(e, BackendError::Server { .. });
                        return Err(Stop::Refuse(shard_error(e)));
                    }
                }
            }
            let mut out = BytesMut::new();
            frontend::encode_query(&mut out, text);
            if leg.conn.stream.write_all(&out).await.is_err() {
                ends[i].broken = true;
                return Err(Stop::Refuse(lost_shard()));
            }
            loop {
                let Ok(f) = read_frame(&mut leg.conn).await else {
                    ends[i].broken = true;
                    return Err(Stop::Refuse(lost_shard()));
                };
                match f.tag {
                    btag::COPY_IN_RESPONSE => {
                        ends[i].copying = true;
                        response.get_or_insert(f.bytes);
                        break;
                    }
                    btag::ERROR_RESPONSE => {
                        ends[i].error = Some(f.bytes);
                        read_to_ready(&mut leg.conn, &mut ends[i]).await;
                        return Err(Stop::Refuse(ClientError::new(
                            "copy",
                            sqlstate::INTERNAL_ERROR,
                            "pg-router: COPY failed on another shard",
                        )));
                    }
                    btag::NOTICE_RESPONSE | btag::PARAMETER_STATUS => {}
                    _ => {
                        ends[i].broken = true;
                        return Err(Stop::Refuse(ClientError::new(
                            "backend_protocol",
                            sqlstate::PROTOCOL_VIOLATION,
                            format!("pg-router: shard {} did not start the COPY", leg.conn.shard),
                        )));
                    }
                }
            }
        }
        let response = response.ok_or_else(|| Stop::Refuse(lost_shard()))?;
        Ok((response, position.unwrap_or(0)))
    }

    /// Reads the client's COPY data up to CopyDone and sends every row to its shard. An
    /// error still reads (and drops) the client's data up to CopyDone or CopyFail.
    async fn stream_rows(
        &mut self,
        legs: &mut [Leg],
        ends: &mut [LegEnd],
        splitter: &mut CopySplitter,
        copy: &CopyIn,
    ) -> Result<(), Stop> {
        let mut pending: Vec<BytesMut> = legs.iter().map(|_| BytesMut::new()).collect();
        let mut pieces = Vec::new();
        let mut failure: Option<ClientError> = None;
        loop {
            let frame = match next_frame(&mut self.cbuf, self.max_message) {
                Ok(Some(f)) => f,
                Ok(None) => {
                    self.flush_client().await?;
                    let n = self.client.read_buf(&mut self.cbuf).await.map_err(|_| End::ClientGone)?;
                    if n == 0 {
                        return Err(End::ClientGone.into());
                    }
                    continue;
                }
                Err(e) => {
                    return Err(End::Fatal(ClientError::protocol(e.to_string())).into());
                }
            };
            match frame.tag {
                tag::COPY_DATA if failure.is_none() && ends.iter().all(|e| e.error.is_none()) => {
                    let r = splitter.feed(frame.body(), &mut pieces);
                    if let Err(e) = r.and_then(|()| self.place(&pieces, legs, &mut pending, copy)) {
                        failure = Some(e);
                    }
                    pieces.clear();
                    self.send_pending(legs, ends, &mut pending, LEG_FLUSH).await;
                }
                tag::COPY_DATA | tag::FLUSH | tag::SYNC => {}
                tag::COPY_DONE => {
                    if failure.is_none() && ends.iter().all(|e| e.error.is_none()) {
                        let r = splitter.finish(&mut pieces);
                        if let Err(e) = r.and_then(|()| self.place(&pieces, legs, &mut pending, copy)) {
                            failure = Some(e);
                        }
                        self.send_pending(legs, ends, &mut pending, 0).await;
                    }
                    return failure.map_or(Ok(()), |e| Err(Stop::Refuse(e)));
                }
                tag::COPY_FAIL => {
                    let reason =
                        String::from_utf8_lossy(frame.body().strip_suffix(&[0]).unwrap_or(frame.body()))
                            .into_owned();
                    return Err(Stop::Refuse(ClientError::new(
                        "copy",
                        sqlstate::QUERY_CANCELED,
                        format!("COPY from stdin failed: {reason}"),
                    )));
                }
                other => {
                    return Err(Stop::Refuse(ClientError::new(
                        "copy",
                        sqlstate::PROTOCOL_VIOLATION,
                        format!("unexpected message type 0x{other:02X} during COPY from stdin"),
                    )));
                }
            }
        }
    }

    /// Appends each piece to the pending data of its shard(s).
    fn place(
        &self,
        pieces: &[Piece],
        legs: &[Leg],
        pending: &mut [BytesMut],
        copy: &CopyIn,
    ) -> Result<(), ClientError> {
        for p in pieces {
            match p {
                Piece::All(bytes) => pending.iter_mut().for_each(|b| b.extend_from_slice(bytes)),
                Piece::Row { key, bytes } => {
                    let endpoint = self.topology.resolve_value(&copy.keyspace, &copy.vindex, key)?;
                    let i = legs.iter().position(|l| l.endpoint == endpoint).ok_or_else(|| {
                        ClientError::new(
                            "routing",
                            sqlstate::INTERNAL_ERROR,
                            format!(
                                "pg-router: shard endpoint {endpoint} is not a shard of {}",
                                copy.keyspace
                            ),
                        )
                    })?;
                    pending[i].extend_from_slice(bytes);
                }
            }
        }
        Ok(())
    }

    /// Sends each shard's pending rows once more than `at_least` bytes wait, and picks up an
    /// error a shard sent meanwhile (it then ignores the rest of its data).
    async fn send_pending(
        &self,
        legs: &mut [Leg],
        ends: &mut [LegEnd],
        pending: &mut [BytesMut],
        at_least: usize,
    ) {
        for ((leg, end), data) in legs.iter_mut().zip(ends.iter_mut()).zip(pending.iter_mut()) {
            if data.is_empty() || data.len() < at_least || end.broken {
                continue;
            }
            let mut out = BytesMut::with_capacity(data.len() + 5);
            out.put_u8(tag::COPY_DATA);
            out.put_i32((data.len() + 4) as i32);
            out.extend_from_slice(data);
            data.clear();
            if leg.conn.stream.write_all(&out).await.is_err() {
                end.broken = true;
                continue;
            }
            poll_error(&mut leg.conn, end).await;
        }
    }

    async fn flush_client(&mut self) -> Result<(), End> {
        if !self.to_client.is_empty() {
            self.client.write_all(&self.to_client).await.map_err(|_| End::ClientGone)?;
            self.to_client.clear();
        }
        Ok(())
    }
}

/// The position of `column` among the columns COPY without a column list reads (every column
/// but dropped and generated ones, in order).
fn position_sql(table: &str, column: &str) -> String {
    let lit = |s: &str| format!("'{}'", s.replace('\'', "''"));
    format!(
        "SELECT (SELECT count(*) FROM pg_attribute a WHERE a.attrelid = k.attrelid AND a.attnum > 0 \
         AND NOT a.attisdropped AND a.attgenerated = '' AND a.attnum < k.attnum) \
         FROM pg_attribute k WHERE k.attrelid = {}::regclass AND k.attname = {} AND NOT k.attisdropped",
        lit(table),
        lit(column)
    )
}

fn encode_copy_done(out: &mut BytesMut) {
    out.put_u8(tag::COPY_DONE);
    out.put_i32(4);
}

fn encode_copy_fail(out: &mut BytesMut, msg: &str) {
    out.put_u8(tag::COPY_FAIL);
    out.put_i32((4 + msg.len() + 1) as i32);
    out.extend_from_slice(msg.as_bytes());
    out.put_u8(0);
}

fn encode_error(e: &ClientError) -> Bytes {
    let mut b = BytesMut::new();
    e.encode(&mut b);
    b.freeze()
}

fn lost_shard() -> ClientError {
    ClientError::new(
        "backend_lost",
        sqlstate::CONNECTION_FAILURE,
        "pg-router: lost a shard's connection during COPY",
    )
}

fn shard_error(e: BackendError) -> ClientError {
    super::own_statement_error(e, "copy", "Reported by shard {shard} while pg-router started the COPY.")
}

/// The next whole frame from a backend.
async fn read_frame(conn: &mut BackendConn) -> std::io::Result<Frame> {
    loop {
        match next_frame(&mut conn.rbuf, PG_MAX_MESSAGE_LEN) {
            Ok(Some(f)) => return Ok(f),
            Ok(None) => {}
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())),
        }
        if conn.stream.read_buf(&mut conn.rbuf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Reads a shard's replies up to ReadyForQuery: its row count, error and status.
async fn read_to_ready(conn: &mut BackendConn, end: &mut LegEnd) {
    loop {
        let Ok(f) = read_frame(conn).await else {
            end.broken = true;
            return;
        };
        match f.tag {
            btag::ERROR_RESPONSE => {
                end.error.get_or_insert(f.bytes);
            }
            btag::COMMAND_COMPLETE => {
                let tag = f.body().split(|b| *b == 0).next().unwrap_or_default();
                end.rows = tag_count(&String::from_utf8_lossy(tag)).unwrap_or(0);
            }
            btag::READY_FOR_QUERY => {
                end.status = f.body().first().and_then(|b| TxStatus::from_byte(*b));
                return;
            }
            _ => {}
        }
    }
}

/// Takes in whatever a shard in COPY has sent without waiting: an ErrorResponse means it
/// failed the COPY (it then skips data up to CopyDone).
async fn poll_error(conn: &mut BackendConn, end: &mut LegEnd) {
    let mut scratch = [0u8; 4096];
    loop {
        let read = poll_fn(|cx| {
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut conn.stream).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => Poll::Ready(Some(rb.filled().len())),
                Poll::Ready(Err(_)) => Poll::Ready(Some(0)),
                Poll::Pending => Poll::Ready(None),
            }
        })
        .await;
        match read {
            None => break,
            Some(0) => {
                end.broken = true;
                return;
            }
            Some(n) => conn.rbuf.extend_from_slice(&scratch[..n]),
        }
    }
    // Only whole frames before ReadyForQuery are taken here; the rest is read at the end.
    while let Some(len) = peek_len(&conn.rbuf) {
        if conn.rbuf[0] != btag::ERROR_RESPONSE && conn.rbuf[0] != btag::NOTICE_RESPONSE {
            break;
        }
        let f = conn.rbuf.split_to(len);
        if f[0] == btag::ERROR_RESPONSE {
            end.error.get_or_insert(f.freeze());
        }
    }
}

/// The length of the whole frame at the start of `buf`, if it is all there.
fn peek_len(buf: &[u8]) -> Option<usize> {
    let len = u32::from_be_bytes(buf.get(1..5)?.try_into().ok()?) as usize + 1;
    (buf.len() >= len).then_some(len)
}
