//! The merge engine: shard DataRows in, client DataRows out.
//!
//! The router pushes each shard's rows as they arrive ([`Merger::push_row`]), marks a shard
//! done at its CommandComplete ([`Merger::finish_shard`]) and calls [`Merger::emit`] to get
//! every client row that can be produced so far. The pipeline is the one `Scatter` defines:
//!
//! 1. k-way merge of the shard queues by `shard_order` (a linear scan of the queue heads:
//!    shard counts are small; ties go to the lower shard index, and a shard's own rows keep
//!    their order, so the merge is stable), or plain concatenation without `shard_order`;
//! 2. grouping: consecutive merged rows with equal group keys combine ([`agg::Group`]);
//! 3. HAVING ([`having`]);
//! 4. `final_order`: rows are buffered (at most `max_buffered_rows`; with a LIMIT only the
//!    best `offset + limit` are kept) and stably sorted at the end;
//! 5. OFFSET / LIMIT, then encoding in the client's formats.
//!
//! Without `final_order` nothing is buffered beyond the shard queues: a row leaves as soon as
//! the merge can prove it is next, and once LIMIT is reached [`Merger::is_done`] turns true so
//! the router can stop reading.

mod agg;
mod having;
mod plan;

use std::cmp::Ordering;
use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use self::agg::{Cell, Group};
use self::plan::{ColPlan, ShardCols};
use crate::exec::merge::datum::{self, Datum};
use crate::exec::merge::error::MergeError;
use crate::exec::merge::row::{self, DataRow, FieldDesc, Format};
use planner::{OutputColumn, Predicate, Scatter, SortKey};

/// A shard row waiting in its queue, with its decoded merge and group keys.
#[derive(Debug)]
struct Queued {
    row: DataRow,
    /// One per `shard_order` key.
    sort: Vec<Datum>,
}

#[derive(Debug, Default)]
struct ShardQueue {
    rows: VecDeque<Queued>,
    finished: bool,
}

/// A merged row held for `final_order`.
#[derive(Debug)]
struct Buffered {
    keys: Vec<Datum>,
    cells: Vec<Cell>,
}

/// The group being accumulated.
#[derive(Debug)]
struct OpenGroup {
    key: Vec<Datum>,
    group: Group,
}

/// Order two key tuples by sort keys, with NULLS FIRST/LAST and DESC applied.
fn cmp_keys(a: &[Datum], b: &[Datum], keys: &[SortKey]) -> Ordering {
    for ((x, y), k) in a.iter().zip(b).zip(keys) {
        let o = match (x.is_null(), y.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) => {
                if k.nulls_first {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (false, true) => {
                if k.nulls_first {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (false, false) => {
                let o = datum::compare(x, y);
                if k.descending {
                    o.reverse()
                } else {
                    o
                }
            }
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// Combines the results of one scatter statement.
#[derive(Debug)]
pub struct Merger {
    cols: ShardCols,
    /// Merged columns (empty in passthrough mode).
    plans: Vec<ColPlan>,
    passthrough: bool,
    /// Client formats of the visible columns.
    client: Vec<Format>,
    /// Visible columns are exactly the shard columns, in order and format: forward frames.
    forward_frames: bool,
    shard_order: Vec<SortKey>,
    /// Group keys (outer keys: without the count(DISTINCT) column), `None` when not grouping.
    group_keys: Option<Vec<usize>>,
    having: Option<Predicate>,
    final_order: Option<Vec<SortKey>>,
    offset: u64,
    limit: Option<u64>,
    max_buffered: usize,
    queues: Vec<ShardQueue>,
    queued_total: usize,
    open: Option<OpenGroup>,
    /// Whether any row reached grouping (a global group over no rows still yields a row).
    saw_rows: bool,
    buffer: Vec<Buffered>,
    skipped: u64,
    emitted: u64,
    done: bool,
}

impl Merger {
    /// `fields`: the shard RowDescription (identical from every shard), with the formats the
    /// shards were asked to send; `client_formats`: one code per visible column.
    pub fn new(
        spec: &Scatter,
        fields: Vec<FieldDesc>,
        client_formats: Vec<i16>,
        shards: usize,
        max_buffered_rows: usize,
    ) -> Result<Self, MergeError> {
        let client = client_formats.into_iter().map(Format::from_code).collect::<Result<Vec<_>, _>>()?;
        let cols = ShardCols::new(fields);
        plan::check_shard_keys(&spec.shard_order, &cols)?;
        let (plans, forward_frames) = if spec.passthrough.is_some() {
            plan::check_passthrough(spec, &cols, &client)?;
            let same = cols.fields.iter().zip(&client).all(|(f, c)| f.format == *c);
            (Vec::new(), same)
        } else {
            let plans = plan::plan_columns(spec, &cols, &client)?;
            let identity = spec.visible == spec.columns.len()
                && spec.columns.len() == cols.fields.len()
                && spec.columns.iter().enumerate().all(|(i, c)| *c == OutputColumn::Column(i))
                && cols.fields.iter().zip(&client).all(|(f, c)| f.format == *c);
            (plans, identity && spec.group.is_none())
        };
        let group_keys = match &spec.group {
            None => None,
            Some(keys) => {
                keys.iter().try_for_each(|&k| cols.require(k).map(|_| ()))?;
                plan::check_group_order(keys, &spec.shard_order)?;
                let distinct = spec.columns.iter().find_map(|c| match c {
                    OutputColumn::CountDistinct(i) => Some(*i),
                    _ => None,
                });
                Some(keys.iter().copied().filter(|k| Some(*k) != distinct).collect())
            }
        };
        if let Some(order) = &spec.final_order {
            order.iter().try_for_each(|k| plan::merged_kind(&plans, k.column).map(|_| ()))?;
        }
        if let Some(p) = &spec.having {
            plan::check_predicate(p, &plans)?;
        }
        Ok(Merger {
            cols,
            plans,
            passthrough: spec.passthrough.is_some(),
            client,
            forward_frames,
            shard_order: spec.shard_order.clone(),
            group_keys,
            having: spec.having.clone(),
            final_order: spec.final_order.clone(),
            offset: spec.offset,
            limit: spec.limit,
            max_buffered: max_buffered_rows,
            queues: (0..shards).map(|_| ShardQueue::default()).collect(),
            queued_total: 0,
            open: None,
            saw_rows: false,
            buffer: Vec::new(),
            skipped: 0,
            emitted: 0,
            done: spec.limit == Some(0),
        })
    }

    /// The client's RowDescription frame: visible columns only.
    pub fn row_description(&self) -> Bytes {
        let fields: Vec<FieldDesc> = if self.passthrough {
            self.cols
                .fields
                .iter()
                .zip(&self.client)
                .map(|(f, c)| FieldDesc { format: *c, ..f.clone() })
                .collect()
        } else {
            self.plans.iter().take(self.client.len()).map(|p| p.field.clone()).collect()
        };
        let mut out = BytesMut::new();
        // Column counts were validated against the shard RowDescription, so this cannot fail.
        let _ = row::write_row_description(&mut out, &fields);
        out.freeze()
    }

    /// A whole DataRow frame from `shard`, in the shard's order.
    pub fn push_row(&mut self, shard: usize, data_row: Bytes) -> Result<(), MergeError> {
        let q = self.queues.get(shard).ok_or_else(|| MergeError::protocol(format!("no shard {shard}")))?;
        if q.finished {
            return Err(MergeError::protocol(format!("shard {shard} sent a row after CommandComplete")));
        }
        let row = DataRow::parse(data_row)?;
        if row.len() != self.cols.fields.len() {
            return Err(MergeError::protocol(format!(
                "DataRow has {} columns, RowDescription had {}",
                row.len(),
                self.cols.fields.len()
            )));
        }
        if self.done {
            return Ok(()); // LIMIT reached: the rest is dropped.
        }
        if self.queued_total >= self.max_buffered {
            return Err(MergeError::TooManyRows { limit: self.max_buffered });
        }
        let sort =
            self.shard_order.iter().map(|k| self.cols.decode(&row, k.column)).collect::<Result<_, _>>()?;
        self.queues[shard].rows.push_back(Queued { row, sort });
        self.queued_total += 1;
        Ok(())
    }

    /// `shard` sent CommandComplete.
    pub fn finish_shard(&mut self, shard: usize) {
        if let Some(q) = self.queues.get_mut(shard) {
            q.finished = true;
        }
    }

    /// A shard whose next row (or CommandComplete) must arrive before output can advance.
    /// Without `shard_order` any shard will do once every queue is empty; the lowest
    /// unfinished one is named.
    pub fn needs(&self) -> Option<usize> {
        if self.done {
            return None;
        }
        let waiting = |q: &ShardQueue| q.rows.is_empty() && !q.finished;
        if self.shard_order.is_empty() {
            if self.queues.iter().all(|q| q.rows.is_empty()) {
                return self.queues.iter().position(waiting);
            }
            return None;
        }
        self.queues.iter().position(waiting)
    }

    /// Rows buffered for `shard` (backpressure: the router stops reading past a threshold).
    pub fn queued(&self, shard: usize) -> usize {
        self.queues.get(shard).map_or(0, |q| q.rows.len())
    }

    /// Everything emitted, or LIMIT satisfied.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Client DataRows written so far (for `SELECT n`).
    pub fn rows_emitted(&self) -> u64 {
        self.emitted
    }

    /// Append every client DataRow that can be produced now.
    pub fn emit(&mut self, out: &mut BytesMut) -> Result<(), MergeError> {
        while !self.done {
            match self.next_input() {
                Next::Row(q) => self.consume(q, out)?,
                Next::Wait => break,
                Next::End => {
                    self.end_of_input(out)?;
                    self.done = true;
                }
            }
        }
        if self.done {
            self.release();
        }
        Ok(())
    }

    /// Drop queued input once nothing more will be emitted.
    fn release(&mut self) {
        for q in &mut self.queues {
            q.rows.clear();
        }
        self.queued_total = 0;
        self.buffer = Vec::new();
    }

    fn next_input(&mut self) -> Next {
        let mut best: Option<usize> = None;
        for (i, q) in self.queues.iter().enumerate() {
            match q.rows.front() {
                None if !q.finished && !self.shard_order.is_empty() => return Next::Wait,
                None => {}
                Some(_) if self.shard_order.is_empty() => {
                    best = Some(i);
                    break;
                }
                Some(head) => {
                    let better = match best {
                        None => true,
                        Some(b) => {
                            let cur = self.queues[b].rows.front().map(|r| &r.sort[..]).unwrap_or(&[]);
                            cmp_keys(&head.sort, cur, &self.shard_order) == Ordering::Less
                        }
                    };
                    if better {
                        best = Some(i);
                    }
                }
            }
        }
        match best.and_then(|i| self.queues[i].rows.pop_front()) {
            Some(q) => {
                self.queued_total -= 1;
                Next::Row(q)
            }
            None if self.queues.iter().all(|q| q.finished) => Next::End,
            None => Next::Wait,
        }
    }

    /// One merged shard row: group it or pass it on.
    fn consume(&mut self, q: Queued, out: &mut BytesMut) -> Result<(), MergeError> {
        let Some(keys) = &self.group_keys else {
            if self.forward_frames && self.having.is_none() && self.final_order.is_none() {
                return self.forward(q.row.frame(), out);
            }
            let cells = if self.passthrough {
                (0..q.row.len()).map(|i| Cell::Raw(q.row.get_bytes(i))).collect()
            } else {
                self.plans
                    .iter()
                    .map(|p| match p.source {
                        OutputColumn::Column(i) => Cell::Raw(q.row.get_bytes(i)),
                        _ => Cell::Raw(None), // aggregates need a grouping (checked in new)
                    })
                    .collect()
            };
            return self.sink(cells, out);
        };
        self.saw_rows = true;
        let key = keys.iter().map(|&k| self.cols.decode(&q.row, k)).collect::<Result<Vec<_>, _>>()?;
        let same = self
            .open
            .as_ref()
            .is_some_and(|g| g.key.iter().zip(&key).all(|(a, b)| datum::compare(a, b) == Ordering::Equal));
        if !same {
            if let Some(done) = self.open.take() {
                self.sink(done.group.finish()?, out)?;
                if self.done {
                    return Ok(());
                }
            }
            self.open = Some(OpenGroup { key, group: Group::new(&self.plans) });
        }
        if let Some(g) = &mut self.open {
            g.group.add(&q.row, &self.plans, &self.cols)?;
        }
        Ok(())
    }

    fn end_of_input(&mut self, out: &mut BytesMut) -> Result<(), MergeError> {
        if let Some(g) = self.open.take() {
            self.sink(g.group.finish()?, out)?;
        } else if !self.saw_rows && self.group_keys.as_ref().is_some_and(|k| k.is_empty()) {
            // A global aggregate over no rows still returns one row.
            self.sink(Group::new(&self.plans).finish()?, out)?;
        }
        if let Some(order) = self.final_order.take() {
            let mut rows = std::mem::take(&mut self.buffer);
            rows.sort_by(|a, b| cmp_keys(&a.keys, &b.keys, &order));
            for r in rows {
                if self.done {
                    break;
                }
                self.output(r.cells, out)?;
            }
        }
        Ok(())
    }

    /// A merged row after grouping: HAVING, then buffer for final_order or output.
    fn sink(&mut self, cells: Vec<Cell>, out: &mut BytesMut) -> Result<(), MergeError> {
        if let Some(p) = &self.having {
            if having::eval(p, &cells, &self.plans)? != Some(true) {
                return Ok(());
            }
        }
        let Some(order) = &self.final_order else {
            return self.output(cells, out);
        };
        let keys = order
            .iter()
            .map(|k| having::column_datum(&cells, &self.plans, k.column))
            .collect::<Result<Vec<_>, _>>()?;
        self.buffer.push(Buffered { keys, cells });
        // With a LIMIT only the first offset+limit rows can be returned: sort and cut when the
        // buffer reaches twice that (amortised O(n log k)); earlier rows stay ahead of later
        // equal ones, so the final stable sort keeps arrival order among ties.
        if let Some(limit) = self.limit {
            let keep = usize::try_from(self.offset.saturating_add(limit)).unwrap_or(usize::MAX);
            let trigger = keep.saturating_mul(2).min(self.max_buffered).max(keep.saturating_add(1));
            if self.buffer.len() >= trigger {
                let order = order.clone();
                self.buffer.sort_by(|a, b| cmp_keys(&a.keys, &b.keys, &order));
                self.buffer.truncate(keep);
            }
        }
        if self.buffer.len() > self.max_buffered {
            return Err(MergeError::TooManyRows { limit: self.max_buffered });
        }
        Ok(())
    }

    /// OFFSET / LIMIT, then write.
    fn output(&mut self, cells: Vec<Cell>, out: &mut BytesMut) -> Result<(), MergeError> {
        if self.skipped < self.offset {
            self.skipped += 1;
            return Ok(());
        }
        let mut values: Vec<Option<Bytes>> = Vec::with_capacity(self.client.len());
        for (j, cell) in cells.into_iter().take(self.client.len()).enumerate() {
            values.push(self.encode_cell(j, cell)?);
        }
        row::write_data_row(out, values.iter().map(|v| v.as_deref()))?;
        self.count_output();
        Ok(())
    }

    fn forward(&mut self, frame: &Bytes, out: &mut BytesMut) -> Result<(), MergeError> {
        if self.skipped < self.offset {
            self.skipped += 1;
            return Ok(());
        }
        out.extend_from_slice(frame);
        self.count_output();
        Ok(())
    }

    fn count_output(&mut self) {
        self.emitted += 1;
        if self.limit.is_some_and(|l| self.emitted >= l) {
            self.done = true;
        }
    }

    /// Encode merged column `j` in the client's format.
    fn encode_cell(&self, j: usize, cell: Cell) -> Result<Option<Bytes>, MergeError> {
        let to = self.client[j];
        let (kind, from) = if self.passthrough {
            (self.cols.kinds[j], self.cols.fields[j].format)
        } else {
            (self.plans[j].kind, self.plans[j].raw_format)
        };
        let d = match cell {
            Cell::Raw(None) | Cell::Value(Datum::Null) => return Ok(None),
            Cell::Raw(Some(b)) if from == to => return Ok(Some(b)),
            Cell::Raw(Some(b)) => {
                let kind =
                    kind.ok_or_else(|| MergeError::unsupported("cannot convert this type's format"))?;
                datum::decode(kind, from, Some(&b))?
            }
            Cell::Value(d) => d,
        };
        let kind = kind.ok_or_else(|| MergeError::unsupported("cannot encode this type"))?;
        let mut buf = Vec::new();
        datum::encode(&d, kind, to, &mut buf)?;
        Ok(Some(Bytes::from(buf)))
    }
}

enum Next {
    Row(Queued),
    Wait,
    End,
}

#[cfg(test)]
mod tests;
