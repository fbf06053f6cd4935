//! Cross-shard SELECT results merged into what one PostgreSQL would have returned.
//!
//! Layout: `row.rs` parses and builds DataRow/RowDescription frames without copying values;
//! `datum.rs` decodes the few columns the merge must compare or aggregate (text and binary
//! formats), `numeric.rs`, `float.rs` and `datetime.rs` reproduce PostgreSQL's arithmetic and
//! output functions for them; `engine.rs` is the [`Merger`]: k-way merge by the shards' sort
//! order, grouping and aggregation, HAVING, a bounded re-sort, OFFSET/LIMIT. Pure code: the IO
//! lives in [`super::fanout`], and [`MergeCombine`] connects the two.

pub mod datetime;
pub mod datum;
pub mod engine;
pub mod error;
pub mod float;
pub mod numeric;
pub mod row;

use bytes::{Bytes, BytesMut};
use planner::{OutputColumn, PassThrough, Scatter, SortKey};

pub use engine::Merger;
pub use error::MergeError;

use super::fanout::{command_complete, Combine};
use crate::error::{sqlstate, ClientError};

/// Rows a shard may have queued in the merger before the router stops reading it.
const QUEUE_SOFT_LIMIT: usize = 512;

/// [`Combine`] for a cross-shard SELECT.
pub struct MergeCombine {
    spec: Scatter,
    /// The client's result-format codes as sent in Bind (empty in the simple protocol).
    result_formats: Vec<i16>,
    send_description: bool,
    max_buffered_rows: usize,
    legs: usize,
    merger: Option<Merger>,
    /// The first shard's RowDescription; every shard must send the same.
    description: Option<Bytes>,
    pending_description: Option<Bytes>,
}

impl MergeCombine {
    pub fn new(
        spec: Scatter,
        result_formats: Vec<i16>,
        send_description: bool,
        max_buffered_rows: usize,
    ) -> Self {
        Self {
            spec,
            result_formats,
            send_description,
            max_buffered_rows,
            legs: 0,
            merger: None,
            description: None,
            pending_description: None,
        }
    }

    fn merger(&mut self) -> Result<&mut Merger, ClientError> {
        self.merger.as_mut().ok_or_else(|| {
            ClientError::new(
                "merge",
                sqlstate::PROTOCOL_VIOLATION,
                "pg-router: a shard sent rows without describing them",
            )
        })
    }
}

/// The plan in the engine's terms, once the shards told the row width:
/// - a pass-through plan with trailing helper columns (`SELECT *` with ORDER BY) lists its
///   columns: every column but the helpers is visible, sort keys point into the helpers;
/// - for `count(DISTINCT x)` the engine groups by the outer keys plus `x` (shards return one
///   row per outer group and distinct `x`) and counts `x` within each outer group.
fn explicit_columns(spec: &Scatter, width: usize) -> Scatter {
    let distinct = spec.columns.iter().find_map(|c| match c {
        OutputColumn::CountDistinct(x) => Some(*x),
        _ => None,
    });
    if let (Some(x), Some(keys)) = (distinct, &spec.group) {
        if !keys.contains(&x) {
            let mut spec = spec.clone();
            if let Some(keys) = spec.group.as_mut() {
                keys.push(x);
            }
            return spec;
        }
    }
    let Some(PassThrough { helpers }) = spec.passthrough else { return spec.clone() };
    if helpers == 0 || helpers > width {
        return spec.clone();
    }
    let base = width - helpers;
    Scatter {
        columns: (0..width).map(OutputColumn::Column).collect(),
        visible: base,
        shard_order: spec.shard_order.iter().map(|k| SortKey { column: base + k.column, ..*k }).collect(),
        passthrough: None,
        ..spec.clone()
    }
}

/// Expands Bind result-format codes to one per column (PostgreSQL: none = all text, one = all).
fn expand_formats(codes: &[i16], columns: usize) -> Vec<i16> {
    match codes {
        [] => vec![0; columns],
        [one] => vec![*one; columns],
        many => (0..columns).map(|i| many.get(i).copied().unwrap_or(0)).collect(),
    }
}

fn merge_error(e: MergeError) -> ClientError {
    let kind = if e.sqlstate() == sqlstate::FEATURE_NOT_SUPPORTED { "unsupported" } else { "merge" };
    ClientError::new(kind, sqlstate::INTERNAL_ERROR, e.to_string()).with_code(e.sqlstate())
}

impl Combine for MergeCombine {
    fn start(&mut self, legs: usize) {
        self.legs = legs;
    }

    fn describe(&mut self, _leg: usize, frame: Option<Bytes>) -> Result<(), ClientError> {
        let Some(frame) = frame else {
            return Err(ClientError::new(
                "merge",
                sqlstate::PROTOCOL_VIOLATION,
                "pg-router: a shard returned no columns for a cross-shard SELECT",
            ));
        };
        if let Some(first) = &self.description {
            // Table OIDs and column numbers differ between independently built shards; the
            // columns must agree on name, type and format.
            let same = |a: &Bytes, b: &Bytes| -> Result<bool, ClientError> {
                let (a, b) = (
                    row::parse_row_description(a).map_err(merge_error)?,
                    row::parse_row_description(b).map_err(merge_error)?,
                );
                Ok(a.len() == b.len()
                    && a.iter().zip(&b).all(|(x, y)| {
                        (&x.name, x.type_oid, x.type_size, x.type_modifier, x.format)
                            == (&y.name, y.type_oid, y.type_size, y.type_modifier, y.format)
                    }))
            };
            if *first != frame && !same(first, &frame)? {
                return Err(ClientError::new(
                    "merge",
                    sqlstate::INTERNAL_ERROR,
                    "pg-router: shards disagree on the result's columns (is the schema the same on every shard?)",
                ));
            }
            return Ok(());
        }
        let fields = row::parse_row_description(&frame).map_err(merge_error)?;
        let spec = explicit_columns(&self.spec, fields.len());
        let visible = if spec.passthrough.is_some() { fields.len() } else { spec.visible };
        let client_formats = expand_formats(&self.result_formats, visible);
        let merger = Merger::new(&spec, fields, client_formats, self.legs, self.max_buffered_rows)
            .map_err(merge_error)?;
        if self.send_description {
            self.pending_description = Some(merger.row_description());
        }
        self.merger = Some(merger);
        self.description = Some(frame);
        Ok(())
    }

    fn row(&mut self, leg: usize, frame: Bytes) -> Result<(), ClientError> {
        self.merger()?.push_row(leg, frame).map_err(merge_error)
    }

    fn complete(&mut self, leg: usize, _tag: &str) -> Result<(), ClientError> {
        if let Some(m) = self.merger.as_mut() {
            m.finish_shard(leg);
        }
        Ok(())
    }

    fn wants(&self, leg: usize) -> bool {
        match &self.merger {
            None => true,
            Some(m) => m.needs() == Some(leg) || m.queued(leg) < QUEUE_SOFT_LIMIT,
        }
    }

    fn emit(&mut self, out: &mut BytesMut) -> Result<(), ClientError> {
        if let Some(d) = self.pending_description.take() {
            out.extend_from_slice(&d);
        }
        match self.merger.as_mut() {
            Some(m) => m.emit(out).map_err(merge_error),
            None => Ok(()),
        }
    }

    fn finish(&mut self, out: &mut BytesMut) -> Result<(), ClientError> {
        self.emit(out)?;
        let rows = self.merger.as_ref().map_or(0, |m| m.rows_emitted());
        command_complete(out, &format!("SELECT {rows}"));
        Ok(())
    }
}
