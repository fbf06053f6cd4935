//! A multi-row INSERT split by shard: which rows go where, and RETURNING rows put back in the
//! client's row order.

use bytes::{Bytes, BytesMut};

use super::fanout::{command_complete, tag_count, Combine};
use crate::error::ClientError;

/// Returns RETURNING rows in the order of the client's VALUES rows.
///
/// Each leg inserted `rows_of[leg]` (original row indexes, in order) and PostgreSQL returns
/// RETURNING rows in VALUES order. When a leg returns a different number of rows (ON CONFLICT
/// DO NOTHING skipped some), the original positions are unknown and rows follow leg order.
pub struct Reorder {
    rows_of: Vec<Vec<usize>>,
    buffered: Vec<Vec<Bytes>>,
    send_description: bool,
    description: Option<Bytes>,
    count: u64,
    total_rows: usize,
}

impl Reorder {
    pub fn new(rows_of: Vec<Vec<usize>>, send_description: bool) -> Self {
        let total_rows = rows_of.iter().map(Vec::len).sum();
        let buffered = rows_of.iter().map(|_| Vec::new()).collect();
        Self { rows_of, buffered, send_description, description: None, count: 0, total_rows }
    }
}

impl Combine for Reorder {
    fn describe(&mut self, _leg: usize, frame: Option<Bytes>) -> Result<(), ClientError> {
        if self.description.is_none() {
            self.description = frame;
        }
        Ok(())
    }

    fn row(&mut self, leg: usize, frame: Bytes) -> Result<(), ClientError> {
        if let Some(b) = self.buffered.get_mut(leg) {
            b.push(frame);
        }
        Ok(())
    }

    fn complete(&mut self, _leg: usize, tag: &str) -> Result<(), ClientError> {
        self.count += tag_count(tag).unwrap_or(0);
        Ok(())
    }

    fn emit(&mut self, _out: &mut BytesMut) -> Result<(), ClientError> {
        Ok(())
    }

    fn finish(&mut self, out: &mut BytesMut) -> Result<(), ClientError> {
        if self.send_description {
            if let Some(d) = &self.description {
                out.extend_from_slice(d);
            }
        }
        let exact = self.buffered.iter().zip(&self.rows_of).all(|(got, want)| got.len() == want.len());
        if exact {
            let mut slots: Vec<Option<Bytes>> = vec![None; self.total_rows];
            for (rows, idx) in self.buffered.iter_mut().zip(&self.rows_of) {
                for (row, &i) in rows.drain(..).zip(idx) {
                    if let Some(slot) = slots.get_mut(i) {
                        *slot = Some(row);
                    }
                }
            }
            for row in slots.into_iter().flatten() {
                out.extend_from_slice(&row);
            }
        } else {
            for rows in &mut self.buffered {
                for row in rows.drain(..) {
                    out.extend_from_slice(&row);
                }
            }
        }
        command_complete(out, &format!("INSERT 0 {}", self.count));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn row(v: &str) -> Bytes {
        let mut b = BytesMut::new();
        crate::protocol::backend::text_data_row(&mut b, &[v]);
        b.freeze()
    }

    #[test]
    fn rows_come_back_in_values_order() {
        // Rows 0 and 2 went to leg 0, rows 1 and 3 to leg 1.
        let mut r = Reorder::new(vec![vec![0, 2], vec![1, 3]], false);
        r.row(1, row("b")).unwrap();
        r.row(0, row("a")).unwrap();
        r.row(1, row("d")).unwrap();
        r.row(0, row("c")).unwrap();
        r.complete(0, "INSERT 0 2").unwrap();
        r.complete(1, "INSERT 0 2").unwrap();
        let mut out = BytesMut::new();
        r.finish(&mut out).unwrap();
        let mut want = BytesMut::new();
        for v in ["a", "b", "c", "d"] {
            want.extend_from_slice(&row(v));
        }
        command_complete(&mut want, "INSERT 0 4");
        assert_eq!(out, want);
    }
}
