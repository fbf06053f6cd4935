//! HAVING over merged rows, with SQL's three-valued logic (NULL comparisons are unknown and
//! an unknown result filters the row out, as `ExecQual` does).
//!
//! Numbers compare by value across integer, numeric and float types: PostgreSQL resolves
//! `int op numeric` to numeric (exact here) and `float op numeric` to float8 (we compare as
//! f64, as `numeric_float8` would). A string literal takes the other side's type, as an
//! unknown-typed literal does in PostgreSQL.

use std::cmp::Ordering;

use super::agg::Cell;
use super::plan::ColPlan;
use crate::exec::merge::datum::{self, cmp_f64, Datum, TypeKind};
use crate::exec::merge::error::MergeError;
use crate::exec::merge::numeric::Numeric;
use planner::{CompareOp, Operand, Predicate};

/// An evaluated operand.
enum Val {
    Null,
    Typed(Datum, TypeKind),
    Number(Numeric),
    Text(String),
}

/// The value of merged column `j` of `row`.
pub(crate) fn column_datum(row: &[Cell], plans: &[ColPlan], j: usize) -> Result<Datum, MergeError> {
    let p = &plans[j];
    match &row[j] {
        Cell::Value(d) => Ok(d.clone()),
        Cell::Raw(bytes) => {
            let kind = super::plan::merged_kind(plans, j)?;
            datum::decode(kind, p.raw_format, bytes.as_deref())
        }
    }
}

fn eval_operand(o: &Operand, row: &[Cell], plans: &[ColPlan]) -> Result<Val, MergeError> {
    Ok(match o {
        Operand::Column(j) => {
            let kind = super::plan::merged_kind(plans, *j)?;
            match column_datum(row, plans, *j)? {
                Datum::Null => Val::Null,
                d => Val::Typed(d, kind),
            }
        }
        Operand::Number(s) => Val::Number(Numeric::parse(s)?),
        Operand::Text(s) => Val::Text(s.clone()),
        Operand::Param(_) => return Err(MergeError::unsupported("HAVING with a parameter across shards")),
    })
}

/// A number view of a value, when it is one.
enum Num {
    Exact(Numeric),
    Float(f64),
}

fn as_num(v: &Val) -> Option<Num> {
    match v {
        Val::Number(n) | Val::Typed(Datum::Numeric(n), _) => Some(Num::Exact(n.clone())),
        Val::Typed(Datum::Int(i), _) => Some(Num::Exact(Numeric::from_i128(*i as i128))),
        Val::Typed(Datum::Float(f), _) => Some(Num::Float(*f)),
        _ => None,
    }
}

fn cmp_nums(a: Num, b: Num) -> Ordering {
    match (a, b) {
        (Num::Exact(x), Num::Exact(y)) => x.cmp_pg(&y),
        (Num::Float(x), y) => cmp_f64(x, num_f64(y)),
        (x, Num::Float(y)) => cmp_f64(num_f64(x), y),
    }
}

fn num_f64(n: Num) -> f64 {
    match n {
        Num::Exact(x) => x.to_f64(),
        Num::Float(f) => f,
    }
}

/// Compare two non-NULL operands.
fn compare_vals(l: &Val, r: &Val) -> Result<Ordering, MergeError> {
    if let (Some(a), Some(b)) = (as_num(l), as_num(r)) {
        return Ok(cmp_nums(a, b));
    }
    match (l, r) {
        (Val::Text(a), Val::Text(b)) => Ok(a.as_bytes().cmp(b.as_bytes())),
        (Val::Typed(d, kind), Val::Text(t)) => {
            let lit = datum::decode(*kind, crate::exec::merge::row::Format::Text, Some(t.as_bytes()))?;
            Ok(datum::compare(d, &lit))
        }
        (Val::Text(_), Val::Typed(..)) => compare_vals(r, l).map(Ordering::reverse),
        (Val::Text(t), Val::Number(n)) => Ok(Numeric::parse(t)?.cmp_pg(n)),
        (Val::Number(_), Val::Text(_)) => compare_vals(r, l).map(Ordering::reverse),
        (Val::Typed(a, _), Val::Typed(b, _)) if std::mem::discriminant(a) == std::mem::discriminant(b) => {
            Ok(datum::compare(a, b))
        }
        _ => Err(MergeError::unsupported("HAVING compares values of incompatible types")),
    }
}

/// Evaluate a predicate: `Some(true/false)`, or `None` for unknown.
pub(crate) fn eval(p: &Predicate, row: &[Cell], plans: &[ColPlan]) -> Result<Option<bool>, MergeError> {
    Ok(match p {
        Predicate::And(a, b) => match (eval(a, row, plans)?, eval(b, row, plans)?) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Predicate::Or(a, b) => match (eval(a, row, plans)?, eval(b, row, plans)?) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Predicate::Not(a) => eval(a, row, plans)?.map(|v| !v),
        Predicate::IsNull { operand, negated } => {
            let null = matches!(eval_operand(operand, row, plans)?, Val::Null);
            Some(null != *negated)
        }
        Predicate::Compare { left, op, right } => {
            let (l, r) = (eval_operand(left, row, plans)?, eval_operand(right, row, plans)?);
            if matches!(l, Val::Null) || matches!(r, Val::Null) {
                return Ok(None);
            }
            let o = compare_vals(&l, &r)?;
            Some(match op {
                CompareOp::Eq => o == Ordering::Equal,
                CompareOp::NotEq => o != Ordering::Equal,
                CompareOp::Lt => o == Ordering::Less,
                CompareOp::LtEq => o != Ordering::Greater,
                CompareOp::Gt => o == Ordering::Greater,
                CompareOp::GtEq => o != Ordering::Less,
            })
        }
    })
}
