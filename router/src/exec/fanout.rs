//! The fan-out loop: send one request to every leg, read all legs concurrently, combine.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

use crate::error::{sqlstate, ClientError};
use crate::pool::Pooled;
use crate::protocol::backend::{self, tag as btag, TxStatus};
use crate::protocol::frame::{next_frame, PG_MAX_MESSAGE_LEN};
use crate::protocol::frontend;
use crate::stream::Stream;
use crate::topology::Endpoint;

/// Client output is written out once this much is buffered.
const FLUSH_AT: usize = 64 * 1024;

/// One backend taking part in a multi-shard statement.
pub struct Leg {
    pub endpoint: Endpoint,
    pub conn: Pooled,
    /// The shard joins an open transaction: send its BEGIN first (its replies are hidden).
    pub begin: Option<String>,
    /// Session settings to bring in line first (replies hidden).
    pub settings: Option<String>,
}

/// What a leg is asked to run.
#[derive(Clone)]
pub enum LegRequest<'a> {
    /// A simple Query.
    Simple(&'a str),
    /// The unnamed statement through the extended protocol: Parse, Bind, Describe, Execute
    /// (unless `describe_only`), Sync.
    Extended {
        sql: &'a str,
        param_types: &'a [u8],
        formats: &'a [i16],
        values: &'a [Option<&'a [u8]>],
        result_formats: &'a [i16],
        describe_only: bool,
    },
}

impl LegRequest<'_> {
    fn encode(&self, out: &mut BytesMut) {
        match self {
            LegRequest::Simple(sql) => frontend::encode_query(out, sql),
            LegRequest::Extended { sql, param_types, formats, values, result_formats, describe_only } => {
                frontend::encode_parse(out, "", sql, param_types);
                frontend::encode_bind(out, "", "", formats, values, result_formats);
                frontend::encode_describe_portal(out, "");
                if !describe_only {
                    frontend::encode_execute(out, "", 0);
                }
                frontend::encode_sync(out);
            }
        }
    }
}

/// How the legs' replies become the client's.
pub trait Combine: Send {
    /// Called once before any reply, with the number of legs.
    fn start(&mut self, _legs: usize) {}
    /// A leg's RowDescription frame, or `None` for NoData.
    fn describe(&mut self, leg: usize, frame: Option<Bytes>) -> Result<(), ClientError>;
    /// A DataRow frame, in the leg's order.
    fn row(&mut self, leg: usize, frame: Bytes) -> Result<(), ClientError>;
    /// A leg's CommandComplete tag (`SELECT 3`, `UPDATE 2`).
    fn complete(&mut self, leg: usize, tag: &str) -> Result<(), ClientError>;
    /// May this leg be read now? Returning false applies backpressure to a fast shard.
    fn wants(&self, _leg: usize) -> bool {
        true
    }
    /// Appends what can be sent to the client now.
    fn emit(&mut self, out: &mut BytesMut) -> Result<(), ClientError>;
    /// Every leg finished without error: append the final frames (CommandComplete).
    fn finish(&mut self, out: &mut BytesMut) -> Result<(), ClientError>;
}

/// How a fan-out ended.
pub struct Outcome {
    /// Failed if a leg failed, InTransaction if a leg is in a transaction block, else Idle.
    pub status: TxStatus,
    /// The first leg that reported an error.
    pub failed: Option<usize>,
    /// Legs whose connection is unusable (IO error, protocol confusion): drop them.
    pub broken: Vec<bool>,
    /// An error went to the client.
    pub errored: bool,
}

/// The client went away while results were being written.
#[derive(Debug)]
pub struct ClientGone;

struct LegState {
    /// ReadyForQuery messages still due (one more per hidden query).
    rfq_due: u8,
    /// Hidden queries (BEGIN, settings) whose replies are still arriving.
    hidden: u8,
    status: TxStatus,
    done: bool,
    broken: bool,
}

/// Runs `requests[i]` on leg `i` and streams the combined result into `out`/`client`.
pub async fn fan_out(
    legs: &mut [Leg],
    requests: &[LegRequest<'_>],
    combine: &mut dyn Combine,
    client: &mut Stream,
    out: &mut BytesMut,
) -> Result<Outcome, ClientGone> {
    let mut states: Vec<LegState> = Vec::with_capacity(legs.len());
    let mut error: Option<Bytes> = None;
    let mut failed = None;
    for (i, leg) in legs.iter_mut().enumerate() {
        let mut bytes = BytesMut::new();
        let mut hidden = 0;
        for sql in [&leg.begin, &leg.settings].into_iter().flatten() {
            frontend::encode_query(&mut bytes, sql);
            hidden += 1;
        }
        if let Some(r) = requests.get(i) {
            r.encode(&mut bytes);
        }
        let ok = leg.conn.stream.write_all(&bytes).await.is_ok();
        states.push(LegState { rfq_due: hidden + 1, hidden, status: TxStatus::Idle, done: !ok, broken: !ok });
        if !ok && error.is_none() {
            error = Some(lost(&leg.conn.shard));
            failed = Some(i);
        }
    }
    combine.start(legs.len());
    let mut scratch = vec![0u8; 16 * 1024];
    let mut start = 0;
    while states.iter().any(|s| !s.done) {
        let draining = error.is_some();
        let mut wanted: Vec<bool> =
            (0..legs.len()).map(|i| !states[i].done && (draining || combine.wants(i))).collect();
        if !wanted.iter().any(|w| *w) {
            // Nothing can be emitted and no leg is asked for: read every leg rather than stall.
            wanted = states.iter().map(|s| !s.done).collect();
        }
        let read = poll_fn(|cx| {
            let n = legs.len();
            for k in 0..n {
                let i = (start + k) % n;
                if !wanted[i] {
                    continue;
                }
                let mut rb = ReadBuf::new(&mut scratch);
                match Pin::new(&mut legs[i].conn.stream).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {
                        let filled = rb.filled().len();
                        legs[i].conn.rbuf.extend_from_slice(rb.filled());
                        return Poll::Ready((i, filled > 0));
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready((i, false)),
                    Poll::Pending => {}
                }
            }
            Poll::Pending
        })
        .await;
        let (i, alive) = read;
        start = (i + 1) % legs.len();
        if !alive {
            states[i].done = true;
            states[i].broken = true;
            if error.is_none() {
                error = Some(lost(&legs[i].conn.shard));
                failed = Some(i);
            }
            continue;
        }
        while let Some(frame) = match next_frame(&mut legs[i].conn.rbuf, PG_MAX_MESSAGE_LEN) {
            Ok(f) => f,
            Err(_) => {
                states[i].done = true;
                states[i].broken = true;
                if error.is_none() {
                    error = Some(protocol_error(&legs[i].conn.shard));
                    failed = Some(i);
                }
                None
            }
        } {
            let st = &mut states[i];
            if frame.tag == btag::ERROR_RESPONSE && error.is_none() {
                error = Some(frame.bytes.clone());
                failed = Some(i);
            }
            if frame.tag == btag::READY_FOR_QUERY {
                st.rfq_due -= 1;
                st.hidden = st.hidden.saturating_sub(1);
                st.status =
                    frame.body().first().and_then(|b| TxStatus::from_byte(*b)).unwrap_or(TxStatus::Failed);
                if st.rfq_due == 0 {
                    st.done = true;
                    break;
                }
                continue;
            }
            if st.hidden > 0 || error.is_some() {
                continue;
            }
            let r = match frame.tag {
                btag::ROW_DESCRIPTION => combine.describe(i, Some(frame.bytes)),
                btag::NO_DATA => combine.describe(i, None),
                btag::DATA_ROW => combine.row(i, frame.bytes),
                btag::COMMAND_COMPLETE => {
                    let tag = frame.body().split(|b| *b == 0).next().unwrap_or_default();
                    combine.complete(i, &String::from_utf8_lossy(tag))
                }
                btag::EMPTY_QUERY => combine.complete(i, ""),
                btag::NOTICE_RESPONSE if i == 0 => {
                    out.extend_from_slice(&frame.bytes);
                    Ok(())
                }
                btag::COPY_IN_RESPONSE | btag::COPY_OUT_RESPONSE | btag::COPY_BOTH_RESPONSE => {
                    st.done = true;
                    st.broken = true;
                    Err(ClientError::new(
                        "unsupported",
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        "pg-router: COPY across shards is not supported",
                    ))
                }
                _ => Ok(()),
            };
            if let Err(e) = r {
                failed.get_or_insert(i);
                error = Some(encode(&e));
            }
        }
        if error.is_none() {
            if let Err(e) = combine.emit(out) {
                failed.get_or_insert(i);
                error = Some(encode(&e));
            }
        }
        if out.len() >= FLUSH_AT {
            client.write_all(out).await.map_err(|_| ClientGone)?;
            out.clear();
        }
    }
    let errored = error.is_some();
    match error {
        Some(e) => out.extend_from_slice(&e),
        None => {
            if let Err(e) = combine.finish(out) {
                out.extend_from_slice(&encode(&e));
                failed.get_or_insert(0);
            }
        }
    }
    let status = if states.iter().any(|s| s.status == TxStatus::Failed) {
        TxStatus::Failed
    } else if states.iter().any(|s| s.status == TxStatus::InTransaction) {
        TxStatus::InTransaction
    } else {
        TxStatus::Idle
    };
    Ok(Outcome {
        status,
        failed,
        broken: states.iter().map(|s| s.broken).collect(),
        errored: errored || failed.is_some(),
    })
}

fn encode(e: &ClientError) -> Bytes {
    let mut b = BytesMut::new();
    e.encode(&mut b);
    b.freeze()
}

fn lost(shard: &str) -> Bytes {
    encode(&ClientError::new(
        "backend_lost",
        sqlstate::CONNECTION_FAILURE,
        format!("pg-router: lost connection to shard {shard}"),
    ))
}

fn protocol_error(shard: &str) -> Bytes {
    encode(&ClientError::new(
        "backend_protocol",
        sqlstate::PROTOCOL_VIOLATION,
        format!("pg-router: invalid message from shard {shard}"),
    ))
}

/// Parses the row count at the end of a CommandComplete tag (`UPDATE 3`, `INSERT 0 3`).
pub fn tag_count(tag: &str) -> Option<u64> {
    tag.rsplit(' ').next().and_then(|n| n.parse().ok())
}

/// A CommandComplete frame.
pub fn command_complete(out: &mut BytesMut, tag: &str) {
    backend::command_complete(out, tag);
}

/// Writes: rows (RETURNING) concatenated in arrival order, counts summed.
pub struct Concat {
    /// Send the first leg's RowDescription (simple protocol; the extended protocol described
    /// the portal already).
    send_description: bool,
    described: bool,
    verb: Option<String>,
    count: u64,
    rows: BytesMut,
}

impl Concat {
    pub fn new(send_description: bool) -> Self {
        Self { send_description, described: false, verb: None, count: 0, rows: BytesMut::new() }
    }
}

impl Combine for Concat {
    fn describe(&mut self, _leg: usize, frame: Option<Bytes>) -> Result<(), ClientError> {
        if let (Some(f), false, true) = (frame, self.described, self.send_description) {
            self.rows.extend_from_slice(&f);
        }
        self.described = true;
        Ok(())
    }

    fn row(&mut self, _leg: usize, frame: Bytes) -> Result<(), ClientError> {
        self.rows.extend_from_slice(&frame);
        Ok(())
    }

    fn complete(&mut self, _leg: usize, tag: &str) -> Result<(), ClientError> {
        self.count += tag_count(tag).unwrap_or(0);
        if self.verb.is_none() {
            let verb = match tag.rsplit_once(' ') {
                Some((verb, n)) if n.parse::<u64>().is_ok() => verb,
                _ => tag,
            };
            self.verb = Some(verb.to_owned());
        }
        Ok(())
    }

    fn emit(&mut self, out: &mut BytesMut) -> Result<(), ClientError> {
        out.extend_from_slice(&self.rows);
        self.rows.clear();
        Ok(())
    }

    fn finish(&mut self, out: &mut BytesMut) -> Result<(), ClientError> {
        self.emit(out)?;
        let tag = match self.verb.as_deref() {
            Some(v) if !v.is_empty() => format!("{v} {}", self.count),
            Some(_) => return Ok(()),
            None => "SELECT 0".to_owned(),
        };
        command_complete(out, &tag);
        Ok(())
    }
}

/// The same statement on every shard: the first leg's answer goes to the client.
pub struct First {
    send_description: bool,
    rows: BytesMut,
    tag: Option<String>,
}

impl First {
    pub fn new(send_description: bool) -> Self {
        Self { send_description, rows: BytesMut::new(), tag: None }
    }
}

impl Combine for First {
    fn describe(&mut self, leg: usize, frame: Option<Bytes>) -> Result<(), ClientError> {
        if let (0, Some(f), true) = (leg, frame, self.send_description) {
            self.rows.extend_from_slice(&f);
        }
        Ok(())
    }

    fn row(&mut self, leg: usize, frame: Bytes) -> Result<(), ClientError> {
        if leg == 0 {
            self.rows.extend_from_slice(&frame);
        }
        Ok(())
    }

    fn complete(&mut self, leg: usize, tag: &str) -> Result<(), ClientError> {
        if leg == 0 {
            self.tag = Some(tag.to_owned());
        }
        Ok(())
    }

    fn emit(&mut self, out: &mut BytesMut) -> Result<(), ClientError> {
        out.extend_from_slice(&self.rows);
        self.rows.clear();
        Ok(())
    }

    fn finish(&mut self, out: &mut BytesMut) -> Result<(), ClientError> {
        self.emit(out)?;
        match self.tag.as_deref() {
            Some("") => backend::empty_query(out),
            Some(t) => command_complete(out, t),
            None => {}
        }
        Ok(())
    }
}

/// Describe only: the first leg's RowDescription (or NoData) goes to the client.
#[derive(Default)]
pub struct DescribeOnly {
    out: BytesMut,
    seen: bool,
}

impl Combine for DescribeOnly {
    fn describe(&mut self, _leg: usize, frame: Option<Bytes>) -> Result<(), ClientError> {
        if !self.seen {
            self.seen = true;
            match frame {
                Some(f) => self.out.extend_from_slice(&f),
                None => backend::no_data(&mut self.out),
            }
        }
        Ok(())
    }

    fn row(&mut self, _leg: usize, _frame: Bytes) -> Result<(), ClientError> {
        Ok(())
    }

    fn complete(&mut self, _leg: usize, _tag: &str) -> Result<(), ClientError> {
        Ok(())
    }

    fn emit(&mut self, out: &mut BytesMut) -> Result<(), ClientError> {
        out.extend_from_slice(&self.out);
        self.out.clear();
        Ok(())
    }

    fn finish(&mut self, out: &mut BytesMut) -> Result<(), ClientError> {
        self.emit(out)
    }
}
