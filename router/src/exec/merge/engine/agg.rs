//! Per-group aggregate state: how each merged column combines the shard rows of one group.
//!
//! Shards have already aggregated their own rows; here partial results combine the way the
//! aggregates' combine functions do in PostgreSQL (`src/backend/utils/adt/numeric.c`
//! `int8_avg_combine`/`numeric_avg_combine`, `float.c` `float8_combine`, `int8.c`, ...).

use std::cmp::Ordering;

use bytes::Bytes;

use super::plan::{ColPlan, ShardCols};
use crate::exec::merge::datetime::Interval;
use crate::exec::merge::datum::{self, Datum, TypeKind};
use crate::exec::merge::error::MergeError;
use crate::exec::merge::numeric::Numeric;
use crate::exec::merge::row::DataRow;
use planner::OutputColumn;

/// A merged column value before encoding for the client.
#[derive(Debug, Clone)]
pub(crate) enum Cell {
    /// A shard value as received (format and type of the column's source shard column).
    Raw(Option<Bytes>),
    /// A computed value of the merged column's type.
    Value(Datum),
}

/// A running sum in the sum column's type.
#[derive(Debug, Clone)]
enum Sum {
    Int(i64),
    Numeric(Numeric),
    /// float4 and float8 both sum in f64 (float4's `float4pl` sums in float4 on a single
    /// server, so float sums may differ from it in the last bits; so may float8's, because
    /// addition order differs).
    Float(f64),
    Interval(Interval),
}

impl Sum {
    fn add(self, d: &Datum) -> Result<Sum, MergeError> {
        Ok(match (self, d) {
            (Sum::Int(a), Datum::Int(b)) => {
                Sum::Int(a.checked_add(*b).ok_or(MergeError::Overflow { what: "bigint" })?)
            }
            (Sum::Numeric(a), Datum::Numeric(b)) => Sum::Numeric(a.add(b)),
            (Sum::Numeric(a), Datum::Int(b)) => Sum::Numeric(a.add(&Numeric::from_i128(*b as i128))),
            (Sum::Float(a), Datum::Float(b)) => Sum::Float(a + b),
            (Sum::Interval(a), Datum::Interval(b)) => {
                let overflow = || MergeError::Overflow { what: "interval" };
                Sum::Interval(Interval {
                    micros: a.micros.checked_add(b.micros).ok_or_else(overflow)?,
                    days: a.days.checked_add(b.days).ok_or_else(overflow)?,
                    months: a.months.checked_add(b.months).ok_or_else(overflow)?,
                })
            }
            _ => return Err(MergeError::unsupported("cannot add values of different types across shards")),
        })
    }

    fn first(d: &Datum) -> Result<Sum, MergeError> {
        Ok(match d {
            Datum::Int(v) => Sum::Int(*v),
            Datum::Numeric(v) => Sum::Numeric(v.clone()),
            Datum::Float(v) => Sum::Float(*v),
            Datum::Interval(v) => Sum::Interval(*v),
            _ => return Err(MergeError::unsupported("cannot sum this type across shards")),
        })
    }

    fn into_datum(self) -> Datum {
        match self {
            Sum::Int(v) => Datum::Int(v),
            Sum::Numeric(v) => Datum::Numeric(v),
            Sum::Float(v) => Datum::Float(v),
            Sum::Interval(v) => Datum::Interval(v),
        }
    }
}

#[derive(Debug, Clone)]
enum Acc {
    /// A group key or other pass-through column: the first row's value.
    Pass(Option<Option<Bytes>>),
    Count(i64),
    Sum(Option<Sum>),
    /// The winning value (decoded, and its original bytes).
    Best {
        max: bool,
        best: Option<(Datum, Bytes)>,
    },
    Avg {
        sum: Option<Sum>,
        count: i64,
        float: bool,
    },
    CountDistinct {
        count: i64,
        last: Option<Datum>,
    },
    Bool {
        and: bool,
        acc: Option<bool>,
    },
}

/// One group's accumulators, one per merged column.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    accs: Vec<Acc>,
}

impl Group {
    pub(crate) fn new(plans: &[ColPlan]) -> Group {
        let accs = plans
            .iter()
            .map(|p| match &p.source {
                OutputColumn::Column(_) => Acc::Pass(None),
                OutputColumn::Count(_) => Acc::Count(0),
                OutputColumn::Sum(_) => Acc::Sum(None),
                OutputColumn::Min(_) => Acc::Best { max: false, best: None },
                OutputColumn::Max(_) => Acc::Best { max: true, best: None },
                OutputColumn::Avg { .. } => {
                    Acc::Avg { sum: None, count: 0, float: p.kind == Some(TypeKind::Float8) }
                }
                OutputColumn::CountDistinct(_) => Acc::CountDistinct { count: 0, last: None },
                OutputColumn::BoolAnd(_) => Acc::Bool { and: true, acc: None },
                OutputColumn::BoolOr(_) => Acc::Bool { and: false, acc: None },
            })
            .collect();
        Group { accs }
    }

    /// Fold one shard row into the group.
    pub(crate) fn add(
        &mut self,
        row: &DataRow,
        plans: &[ColPlan],
        cols: &ShardCols,
    ) -> Result<(), MergeError> {
        for (acc, plan) in self.accs.iter_mut().zip(plans) {
            match (acc, &plan.source) {
                (Acc::Pass(v), OutputColumn::Column(i)) => {
                    if v.is_none() {
                        *v = Some(row.get_bytes(*i));
                    }
                }
                (Acc::Count(n), OutputColumn::Count(i)) => {
                    if let Datum::Int(c) = cols.decode(row, *i)? {
                        *n = n.checked_add(c).ok_or(MergeError::Overflow { what: "bigint" })?;
                    }
                }
                (Acc::Sum(s), OutputColumn::Sum(i)) => {
                    let d = cols.decode(row, *i)?;
                    if !d.is_null() {
                        *s = Some(match s.take() {
                            None => Sum::first(&d)?,
                            Some(prev) => prev.add(&d)?,
                        });
                    }
                }
                (Acc::Best { max, best }, OutputColumn::Min(i) | OutputColumn::Max(i)) => {
                    let d = cols.decode(row, *i)?;
                    if d.is_null() {
                        continue;
                    }
                    let better = match best {
                        None => true,
                        Some((cur, _)) => {
                            let o = datum::compare(&d, cur);
                            if *max {
                                o == Ordering::Greater
                            } else {
                                o == Ordering::Less
                            }
                        }
                    };
                    if better {
                        *best = Some((d, row.get_bytes(*i).unwrap_or_default()));
                    }
                }
                (Acc::Avg { sum, count, float }, OutputColumn::Avg { sum: si, count: ci }) => {
                    let s = cols.decode(row, *si)?;
                    if !s.is_null() {
                        // Integer sums become numeric (int8_avg divides numerics).
                        let s = match (s, *float) {
                            (Datum::Int(v), false) => Datum::Numeric(Numeric::from_i128(v as i128)),
                            (other, _) => other,
                        };
                        *sum = Some(match sum.take() {
                            None => Sum::first(&s)?,
                            Some(prev) => prev.add(&s)?,
                        });
                    }
                    if let Datum::Int(c) = cols.decode(row, *ci)? {
                        *count = count.checked_add(c).ok_or(MergeError::Overflow { what: "bigint" })?;
                    }
                }
                (Acc::CountDistinct { count, last }, OutputColumn::CountDistinct(i)) => {
                    // Rows arrive sorted by (outer keys, x): a new value differs from the last.
                    let d = cols.decode(row, *i)?;
                    if d.is_null() {
                        continue;
                    }
                    let new = last.as_ref().is_none_or(|l| datum::compare(l, &d) != Ordering::Equal);
                    if new {
                        *count += 1;
                        *last = Some(d);
                    }
                }
                (Acc::Bool { and, acc }, OutputColumn::BoolAnd(i) | OutputColumn::BoolOr(i)) => {
                    if let Datum::Bool(b) = cols.decode(row, *i)? {
                        *acc = Some(match *acc {
                            None => b,
                            Some(a) if *and => a && b,
                            Some(a) => a || b,
                        });
                    }
                }
                _ => return Err(MergeError::unsupported("internal: aggregate state mismatch")),
            }
        }
        Ok(())
    }

    /// The merged row of the group. An empty group (global aggregate over no rows) gives
    /// count 0 and NULL for everything else.
    pub(crate) fn finish(self) -> Result<Vec<Cell>, MergeError> {
        self.accs
            .into_iter()
            .map(|acc| {
                Ok(match acc {
                    Acc::Pass(v) => Cell::Raw(v.flatten()),
                    Acc::Count(n) | Acc::CountDistinct { count: n, .. } => Cell::Value(Datum::Int(n)),
                    Acc::Sum(s) => Cell::Value(s.map_or(Datum::Null, Sum::into_datum)),
                    Acc::Best { best, .. } => Cell::Raw(best.map(|(_, b)| b)),
                    Acc::Avg { sum, count, .. } => Cell::Value(average(sum, count)?),
                    Acc::Bool { acc, .. } => Cell::Value(acc.map_or(Datum::Null, Datum::Bool)),
                })
            })
            .collect()
    }
}

/// `avg` = total sum / total count: `numeric_div` (select_div_scale) for integer and numeric
/// inputs, float8 division (`float8_avg`: Sx / N) for floats; NULL over no rows.
fn average(sum: Option<Sum>, count: i64) -> Result<Datum, MergeError> {
    if count == 0 {
        return Ok(Datum::Null);
    }
    Ok(match sum {
        None => Datum::Null,
        Some(Sum::Float(s)) => Datum::Float(s / count as f64),
        Some(Sum::Numeric(s)) => Datum::Numeric(s.div(&Numeric::from_i128(count as i128))?),
        Some(Sum::Int(s)) => {
            Datum::Numeric(Numeric::from_i128(s as i128).div(&Numeric::from_i128(count as i128))?)
        }
        Some(Sum::Interval(_)) => return Err(MergeError::unsupported("avg(interval) across shards")),
    })
}
