//! Validating a [`Scatter`] against the shard RowDescription, once per statement, so that
//! everything refused (unknown types, impossible format conversions, bad column indexes) is
//! refused before the first row, and the per-row code needs no checks beyond the frame.

use bytes::Bytes;

use crate::exec::merge::datum::{self, Datum, TypeKind};
use crate::exec::merge::error::MergeError;
use crate::exec::merge::row::{DataRow, FieldDesc, Format};
use planner::{Operand, OutputColumn, Predicate, Scatter, SortKey};

/// numeric: oid 1700, varlena (`pg_type.dat`).
const NUMERIC_OID: u32 = 1700;
/// float8: oid 701, 8 bytes.
const FLOAT8_OID: u32 = 701;
/// int8: oid 20, 8 bytes.
const INT8_OID: u32 = 20;

/// What the engine knows about the shard columns.
#[derive(Debug)]
pub(crate) struct ShardCols {
    pub fields: Vec<FieldDesc>,
    pub kinds: Vec<Option<TypeKind>>,
}

impl ShardCols {
    pub(crate) fn new(fields: Vec<FieldDesc>) -> ShardCols {
        let kinds = fields.iter().map(|f| TypeKind::from_oid(f.type_oid)).collect();
        ShardCols { fields, kinds }
    }

    /// Check a shard column index and that its type can be decoded.
    pub(crate) fn require(&self, i: usize) -> Result<TypeKind, MergeError> {
        let f = self.fields.get(i).ok_or_else(|| {
            MergeError::protocol(format!(
                "the plan refers to shard column {i}, shards sent {}",
                self.fields.len()
            ))
        })?;
        TypeKind::require(f.type_oid)
    }

    fn check_index(&self, i: usize) -> Result<(), MergeError> {
        self.fields.get(i).map(|_| ()).ok_or_else(|| {
            MergeError::protocol(format!(
                "the plan refers to shard column {i}, shards sent {}",
                self.fields.len()
            ))
        })
    }

    /// Decode column `i` of a shard row (the column was validated by [`ShardCols::require`]).
    pub(crate) fn decode(&self, row: &DataRow, i: usize) -> Result<Datum, MergeError> {
        let kind = self.require(i)?;
        datum::decode(kind, self.fields[i].format, row.get(i))
    }
}

/// One merged column, resolved.
#[derive(Debug, Clone)]
pub(crate) struct ColPlan {
    pub source: OutputColumn,
    /// The merged value's type, when the engine can decode it.
    pub kind: Option<TypeKind>,
    /// The format of `Cell::Raw` values (the source shard column's format).
    pub raw_format: Format,
    /// The client's RowDescription field (format already the client's; for helper columns
    /// the format is the raw one).
    pub field: FieldDesc,
}

fn kind_of_sum(k: TypeKind) -> Result<TypeKind, MergeError> {
    match k {
        TypeKind::Int2
        | TypeKind::Int4
        | TypeKind::Int8
        | TypeKind::Numeric
        | TypeKind::Float4
        | TypeKind::Float8
        | TypeKind::Interval => Ok(k),
        _ => Err(MergeError::unsupported(format!("cannot merge sum() of {k:?} across shards"))),
    }
}

fn require_int(cols: &ShardCols, i: usize, what: &str) -> Result<(), MergeError> {
    match cols.require(i)? {
        TypeKind::Int2 | TypeKind::Int4 | TypeKind::Int8 => Ok(()),
        k => Err(MergeError::unsupported(format!("{what} column has type {k:?}, expected an integer"))),
    }
}

/// Resolve one merged column.
fn plan_column(src: &OutputColumn, cols: &ShardCols, format: Option<Format>) -> Result<ColPlan, MergeError> {
    let base = |i: usize| -> Result<FieldDesc, MergeError> {
        cols.check_index(i)?;
        Ok(cols.fields[i].clone())
    };
    let (field, kind) = match src {
        OutputColumn::Column(i) | OutputColumn::Min(i) | OutputColumn::Max(i) => {
            let f = base(*i)?;
            let kind = if matches!(src, OutputColumn::Column(_)) {
                TypeKind::from_oid(f.type_oid)
            } else {
                Some(cols.require(*i)?)
            };
            (f, kind)
        }
        OutputColumn::Count(i) => {
            require_int(cols, *i, "count()")?;
            let f = base(*i)?;
            (FieldDesc { type_oid: INT8_OID, type_size: 8, type_modifier: -1, ..f }, Some(TypeKind::Int8))
        }
        OutputColumn::Sum(i) => (base(*i)?, Some(kind_of_sum(cols.require(*i)?)?)),
        OutputColumn::Avg { sum, count } => {
            require_int(cols, *count, "avg() count")?;
            let f = base(*sum)?;
            let (oid, size, kind) = match kind_of_sum(cols.require(*sum)?)? {
                TypeKind::Float4 | TypeKind::Float8 => (FLOAT8_OID, 8, TypeKind::Float8),
                TypeKind::Interval => {
                    return Err(MergeError::unsupported("cannot merge avg(interval) across shards"));
                }
                _ => (NUMERIC_OID, -1, TypeKind::Numeric),
            };
            (FieldDesc::computed(f.name, oid, size, f.format), Some(kind))
        }
        OutputColumn::CountDistinct(i) => {
            cols.require(*i)?;
            let f = base(*i)?;
            (FieldDesc::computed(Bytes::from_static(b"count"), INT8_OID, 8, f.format), Some(TypeKind::Int8))
        }
        OutputColumn::BoolAnd(i) | OutputColumn::BoolOr(i) => {
            if cols.require(*i)? != TypeKind::Bool {
                return Err(MergeError::unsupported("bool_and/bool_or over a non-boolean column"));
            }
            (base(*i)?, Some(TypeKind::Bool))
        }
    };
    let raw_format = field.format;
    let computed = !matches!(src, OutputColumn::Column(_) | OutputColumn::Min(_) | OutputColumn::Max(_));
    let mut field = field;
    if let Some(to) = format {
        // Raw values convert from the shard format; computed ones are encoded from scratch.
        let from = if computed { Format::Binary } else { raw_format };
        let ok = match kind {
            Some(k) => k.can_convert(from, to),
            None => from == to,
        };
        if !ok {
            return Err(MergeError::unsupported(format!(
                "cannot convert column \"{}\" (type oid {}) between text and binary format",
                String::from_utf8_lossy(&field.name),
                field.type_oid
            )));
        }
        field.format = to;
    }
    Ok(ColPlan { source: src.clone(), kind, raw_format, field })
}

/// Resolve and validate every merged column of a non-passthrough plan.
pub(crate) fn plan_columns(
    spec: &Scatter,
    cols: &ShardCols,
    client: &[Format],
) -> Result<Vec<ColPlan>, MergeError> {
    if spec.visible > spec.columns.len() || client.len() != spec.visible {
        return Err(MergeError::protocol(format!(
            "{} visible columns, {} merged columns, {} client formats",
            spec.visible,
            spec.columns.len(),
            client.len()
        )));
    }
    let plans = spec
        .columns
        .iter()
        .enumerate()
        .map(|(j, c)| plan_column(c, cols, client.get(j).copied()))
        .collect::<Result<Vec<_>, _>>()?;
    let aggregates = plans.iter().any(|p| !matches!(p.source, OutputColumn::Column(_)));
    if aggregates && spec.group.is_none() {
        return Err(MergeError::unsupported("aggregates without a grouping in a scatter plan"));
    }
    let distinct: Vec<usize> = spec
        .columns
        .iter()
        .filter_map(|c| if let OutputColumn::CountDistinct(i) = c { Some(*i) } else { None })
        .collect();
    if distinct.windows(2).any(|w| w[0] != w[1]) {
        return Err(MergeError::unsupported("count(DISTINCT) over more than one expression across shards"));
    }
    if let (Some(x), Some(keys)) = (distinct.first(), &spec.group) {
        if !keys.contains(x) {
            return Err(MergeError::unsupported("count(DISTINCT x) needs x among the shard group keys"));
        }
    }
    Ok(plans)
}

/// Check sort keys over shard columns.
pub(crate) fn check_shard_keys(keys: &[SortKey], cols: &ShardCols) -> Result<(), MergeError> {
    keys.iter().try_for_each(|k| cols.require(k.column).map(|_| ()))
}

/// Check a merged column reference (final_order, HAVING) and return its type.
pub(crate) fn merged_kind(plans: &[ColPlan], j: usize) -> Result<TypeKind, MergeError> {
    let p = plans.get(j).ok_or_else(|| {
        MergeError::protocol(format!("the plan refers to merged column {j}, it has {}", plans.len()))
    })?;
    p.kind.ok_or_else(|| {
        MergeError::unsupported(format!("cannot merge values of type oid {} across shards", p.field.type_oid))
    })
}

/// Check a HAVING predicate's column references and refuse parameters.
pub(crate) fn check_predicate(p: &Predicate, plans: &[ColPlan]) -> Result<(), MergeError> {
    let operand = |o: &Operand| match o {
        Operand::Column(j) => merged_kind(plans, *j).map(|_| ()),
        Operand::Param(_) => Err(MergeError::unsupported("HAVING with a parameter across shards")),
        Operand::Number(_) | Operand::Text(_) => Ok(()),
    };
    match p {
        Predicate::And(a, b) | Predicate::Or(a, b) => {
            check_predicate(a, plans)?;
            check_predicate(b, plans)
        }
        Predicate::Not(a) => check_predicate(a, plans),
        Predicate::Compare { left, right, .. } => {
            operand(left)?;
            operand(right)
        }
        Predicate::IsNull { operand: o, .. } => operand(o),
    }
}

/// Check a `SELECT *` pass-through plan: nothing but order, offset and limit, and every
/// column convertible to the client's format.
pub(crate) fn check_passthrough(
    spec: &Scatter,
    cols: &ShardCols,
    client: &[Format],
) -> Result<(), MergeError> {
    if !spec.columns.is_empty() || spec.group.is_some() || spec.having.is_some() || spec.final_order.is_some()
    {
        return Err(MergeError::unsupported("SELECT * pass-through cannot group, filter or re-sort"));
    }
    if client.len() != cols.fields.len() {
        return Err(MergeError::protocol(format!(
            "{} client formats for {} columns",
            client.len(),
            cols.fields.len()
        )));
    }
    for ((f, to), kind) in cols.fields.iter().zip(client).zip(&cols.kinds) {
        let ok = match kind {
            Some(k) => k.can_convert(f.format, *to),
            None => f.format == *to,
        };
        if !ok {
            return Err(MergeError::unsupported(format!(
                "cannot convert type oid {} between text and binary format",
                f.type_oid
            )));
        }
    }
    Ok(())
}

/// Grouping combines adjacent rows only, so the shards must sort by the group keys first
/// (in any order and direction: equal keys are adjacent either way).
pub(crate) fn check_group_order(keys: &[usize], order: &[SortKey]) -> Result<(), MergeError> {
    let sorted =
        keys.len() <= order.len() && keys.iter().all(|k| order[..keys.len()].iter().any(|o| o.column == *k));
    if sorted {
        Ok(())
    } else {
        Err(MergeError::unsupported("the shards' ORDER BY does not start with the GROUP BY keys"))
    }
}
