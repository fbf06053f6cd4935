//! Expression and name helpers shared by the analysis and the rewrite: folding names,
//! classifying relation names, splitting conjunctions, the sub-expressions of an expression,
//! and reading sharding-key values from literals and placeholders.

use std::borrow::Cow;

use sqlparser::ast::{
    BinaryOperator, CastKind, Expr, FunctionArg, FunctionArgExpr, FunctionArgumentClause, FunctionArguments,
    ObjectName, ObjectNamePart, UnaryOperator, Value as SqlValue,
};
use vindex::{ColumnType, Literal, TableKind, ValidatedVSchema, Value};

use crate::analyze::RelClass;
use crate::error::PlanError;
use crate::plan::KeyExpr;

/// A name as PostgreSQL folds it.
pub(crate) fn ident(id: &sqlparser::ast::Ident) -> String {
    if id.quote_style.is_some() {
        id.value.clone()
    } else {
        id.value.to_lowercase()
    }
}

/// The parts of an object name, folded.
pub(crate) fn name_parts(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(id) => ident(id),
            ObjectNamePart::Function(f) => ident(&f.name),
        })
        .collect()
}

/// Classify a relation name against the VSchema (`public.x` = `x`; `pg_catalog.*`,
/// `information_schema.*` and `pg_*` are catalog relations).
pub(crate) fn classify_name<'v>(vs: &'v ValidatedVSchema, name: &ObjectName) -> RelClass<'v> {
    let parts = name_parts(name);
    let Some(table) = parts.last().cloned() else { return RelClass::Catalog };
    let schema = parts.len().checked_sub(2).map(|i| parts[i].as_str());
    if matches!(schema, Some("pg_catalog" | "information_schema")) {
        return RelClass::Catalog;
    }
    match vs.table(&table) {
        Some(t) if t.is_sharded() => RelClass::Sharded(t),
        Some(t) if t.kind() == TableKind::Reference => RelClass::Reference(t),
        Some(t) => RelClass::Unsharded(t.keyspace().to_owned()),
        None if schema.is_none() && table.starts_with("pg_") => RelClass::Catalog,
        None => RelClass::Unknown(table),
    }
}

/// Split top-level `AND`s (through parentheses).
pub(crate) fn conjuncts(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::BinaryOp { left, op: BinaryOperator::And, right } => {
            let mut v = conjuncts(left);
            v.extend(conjuncts(right));
            v
        }
        Expr::Nested(inner) => match inner.as_ref() {
            Expr::BinaryOp { op: BinaryOperator::And, .. } => conjuncts(inner),
            _ => vec![e],
        },
        _ => vec![e],
    }
}

/// The sub-expressions of an expression (not the queries inside it); `None` for shapes this
/// crate does not look into.
pub(crate) fn expr_children(e: &Expr) -> Option<Vec<&Expr>> {
    let mut exprs: Vec<&Expr> = Vec::new();
    match e {
        Expr::Subquery(_) | Expr::Exists { .. } => {}
        Expr::InSubquery { expr, .. } => exprs.push(expr),
        Expr::Function(f) => {
            if let FunctionArguments::List(list) = &f.args {
                for a in &list.args {
                    let (FunctionArg::Named { arg, .. }
                    | FunctionArg::ExprNamed { arg, .. }
                    | FunctionArg::Unnamed(arg)) = a;
                    if let FunctionArgExpr::Expr(x) = arg {
                        exprs.push(x);
                    }
                }
                for c in &list.clauses {
                    match c {
                        FunctionArgumentClause::OrderBy(obs) => exprs.extend(obs.iter().map(|o| &o.expr)),
                        FunctionArgumentClause::Where(w) | FunctionArgumentClause::Limit(w) => exprs.push(w),
                        _ => {}
                    }
                }
            }
            exprs.extend(f.filter.as_deref());
            exprs.extend(f.within_group.iter().map(|o| &o.expr));
        }
        Expr::Identifier(_)
        | Expr::CompoundIdentifier(_)
        | Expr::Value(_)
        | Expr::TypedString(_)
        | Expr::Wildcard(_)
        | Expr::QualifiedWildcard(..)
        | Expr::Interval(_) => {}
        Expr::IsFalse(x)
        | Expr::IsNotFalse(x)
        | Expr::IsTrue(x)
        | Expr::IsNotTrue(x)
        | Expr::IsNull(x)
        | Expr::IsNotNull(x)
        | Expr::IsUnknown(x)
        | Expr::IsNotUnknown(x)
        | Expr::Nested(x)
        | Expr::UnaryOp { expr: x, .. }
        | Expr::Cast { expr: x, .. }
        | Expr::Collate { expr: x, .. }
        | Expr::Extract { expr: x, .. }
        | Expr::Ceil { expr: x, .. }
        | Expr::Floor { expr: x, .. }
        | Expr::Named { expr: x, .. }
        | Expr::IsNormalized { expr: x, .. }
        | Expr::JsonAccess { value: x, .. } => exprs.push(x),
        Expr::IsDistinctFrom(a, b)
        | Expr::IsNotDistinctFrom(a, b)
        | Expr::BinaryOp { left: a, right: b, .. }
        | Expr::AnyOp { left: a, right: b, .. }
        | Expr::AllOp { left: a, right: b, .. }
        | Expr::AtTimeZone { timestamp: a, time_zone: b }
        | Expr::Position { expr: a, r#in: b }
        | Expr::InUnnest { expr: a, array_expr: b, .. } => exprs.extend([a.as_ref(), b.as_ref()]),
        Expr::Like { expr, pattern, escape_char, .. }
        | Expr::ILike { expr, pattern, escape_char, .. }
        | Expr::SimilarTo { expr, pattern, escape_char, .. } => {
            exprs.extend([expr.as_ref(), pattern.as_ref()]);
            exprs.extend(escape_char.as_deref());
        }
        Expr::InList { expr, list, .. } => {
            exprs.push(expr);
            exprs.extend(list);
        }
        Expr::Between { expr, low, high, .. } => exprs.extend([expr.as_ref(), low.as_ref(), high.as_ref()]),
        Expr::Substring { expr, substring_from, substring_for, .. } => {
            exprs.push(expr);
            exprs.extend(substring_from.as_deref());
            exprs.extend(substring_for.as_deref());
        }
        Expr::Trim { expr, trim_what, trim_characters, .. } => {
            exprs.push(expr);
            exprs.extend(trim_what.as_deref());
            exprs.extend(trim_characters.iter().flatten());
        }
        Expr::Overlay { expr, overlay_what, overlay_from, overlay_for } => {
            exprs.extend([expr.as_ref(), overlay_what.as_ref(), overlay_from.as_ref()]);
            exprs.extend(overlay_for.as_deref());
        }
        Expr::Case { operand, conditions, else_result, .. } => {
            exprs.extend(operand.as_deref());
            for c in conditions {
                exprs.extend([&c.condition, &c.result]);
            }
            exprs.extend(else_result.as_deref());
        }
        Expr::Tuple(list) => exprs.extend(list),
        Expr::Array(a) => exprs.extend(&a.elem),
        Expr::GroupingSets(sets) | Expr::Cube(sets) | Expr::Rollup(sets) => {
            exprs.extend(sets.iter().flatten())
        }
        Expr::CompoundFieldAccess { root, access_chain } => {
            exprs.push(root);
            for a in access_chain {
                match a {
                    sqlparser::ast::AccessExpr::Dot(x) => exprs.push(x),
                    sqlparser::ast::AccessExpr::Subscript(sqlparser::ast::Subscript::Index { index }) => {
                        exprs.push(index)
                    }
                    sqlparser::ast::AccessExpr::Subscript(sqlparser::ast::Subscript::Slice {
                        lower_bound,
                        upper_bound,
                        stride,
                    }) => exprs.extend(lower_bound.iter().chain(upper_bound).chain(stride)),
                }
            }
        }
        _ => return None,
    }
    Some(exprs)
}

/// Does this text hold a query (for expression shapes the walk does not look into)?
pub(crate) fn looks_like_query(text: &str) -> bool {
    crate::parse::significant(text)
        .iter()
        .any(|t| matches!(&t.kind, crate::parse::TokenKind::Word(w) if w == "select" || w == "values" || w == "table"))
}

/// A literal or `$n` as a key value of a `ty` column; `Ok(None)` when the expression is not a
/// value the planner can read (the predicate is then not used for routing).
pub(crate) fn key_expr(e: &Expr, ty: ColumnType) -> Result<Option<KeyExpr>, vindex::Error> {
    let converted = match e {
        Expr::Nested(x) => return key_expr(x, ty),
        Expr::Value(v) => match &v.value {
            SqlValue::Placeholder(p) => return Ok(param_number(p).map(KeyExpr::Param)),
            // A number that is not an integer of the column (`id = 1.5`, out of range) is
            // compared numerically by PostgreSQL and matches no row: not usable, not an error.
            SqlValue::Number(n, _) => {
                return Ok(Value::from_literal(&Literal::Number(n), ty).ok().map(KeyExpr::Literal))
            }
            SqlValue::SingleQuotedString(s) | SqlValue::EscapedStringLiteral(s) => {
                Value::from_literal(&Literal::String(Cow::Borrowed(s)), ty)
            }
            SqlValue::DollarQuotedString(d) => {
                Value::from_literal(&Literal::String(Cow::Borrowed(&d.value)), ty)
            }
            SqlValue::Null => Ok(Value::Null),
            _ => return Ok(None),
        },
        Expr::UnaryOp { op: UnaryOperator::Minus, expr } => match expr.as_ref() {
            Expr::Value(v) => match &v.value {
                SqlValue::Number(n, _) => {
                    return Ok(Value::from_literal(&Literal::Number(&format!("-{n}")), ty)
                        .ok()
                        .map(KeyExpr::Literal))
                }
                _ => return Ok(None),
            },
            _ => return Ok(None),
        },
        Expr::Cast { kind: CastKind::DoubleColon | CastKind::Cast, expr, .. } => match expr.as_ref() {
            Expr::Value(v) if matches!(v.value, SqlValue::Placeholder(_)) => return key_expr(expr, ty),
            Expr::Value(_) => Value::from_sql_literal(&e.to_string(), ty),
            _ => return Ok(None),
        },
        Expr::TypedString(_) => Value::from_sql_literal(&e.to_string(), ty),
        _ => return Ok(None),
    };
    match converted {
        Ok(v) => Ok(Some(KeyExpr::Literal(v))),
        // Literal forms vindex cannot read, and values whose reading depends on session
        // settings (time zones): not usable for routing, but PostgreSQL may accept them.
        Err(vindex::Error::InvalidLiteral { .. } | vindex::Error::UnsupportedType { .. }) => Ok(None),
        Err(vindex::Error::InvalidValue {
            column_type: ColumnType::Timestamp | ColumnType::TimestampTz,
            ..
        }) => Ok(None),
        Err(other) => Err(other),
    }
}

pub(crate) fn param_number(p: &str) -> Option<usize> {
    p.strip_prefix('$').and_then(|n| n.parse().ok()).filter(|&n| n > 0)
}

pub(crate) fn key_error(table: &str, column: &str, err: &vindex::Error) -> PlanError {
    let sqlstate = match err {
        vindex::Error::InvalidValue { .. } => "22P02",
        other => other.sqlstate(),
    };
    PlanError::KeyValue {
        table: table.to_owned(),
        column: column.to_owned(),
        reason: err.to_string(),
        sqlstate,
    }
}
