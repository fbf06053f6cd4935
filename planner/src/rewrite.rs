//! Per-shard SQL for a SELECT that runs on several shards, and the [`Scatter`] that says how
//! the router merges the shard results.
//!
//! Decisions (see `plan.rs` for the executor's side):
//! - Visible select items keep their position in the shard SQL, so shard column `i` carries the
//!   client's column name for merged column `i`; helpers are appended after them as
//!   `expr AS __pgr_<n>`.
//! - `avg(x)` becomes `sum(x) AS avg` (or the user's alias) plus a helper `count(x)`.
//! - `count(DISTINCT x)`: the shards group by the user's keys plus `x` (a helper column) and the
//!   router counts distinct `x` per group; other aggregates combine from those finer groups.
//! - Aggregating queries: shards `ORDER BY` the group keys (in the user's directions when the
//!   user's ORDER BY is a permutation-prefix of them), lose HAVING, LIMIT and OFFSET.
//! - Plain queries keep their ORDER BY; `LIMIT n OFFSET m` becomes `LIMIT n+m`.
//! - `SELECT *`: [`PassThrough`] with the ORDER BY expressions appended as helpers.

use sqlparser::ast::{
    BinaryOperator, DuplicateTreatment, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr,
    Ident, LimitClause, OrderBy, OrderByExpr, OrderByKind, OrderByOptions, OrderBySort, Query, Select,
    SelectItem, SetExpr, UnaryOperator, Value as SqlValue,
};

use crate::analyze::{expr_children, param_number};
use crate::error::PlanError;
use crate::plan::{CompareOp, Operand, OutputColumn, PassThrough, Predicate, Scatter, SortKey};

const ORDER_BY_REASON: &str =
    "ORDER BY across shards needs the sort expression in the select list or a plain column";
const HAVING_REASON: &str =
    "HAVING across shards supports comparisons (=, <>, <, <=, >, >=, IS [NOT] NULL, AND, OR, NOT) of aggregates, group keys and literals";

/// The aggregates the router can combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AggKind {
    Count,
    CountDistinct,
    Sum,
    Min,
    Max,
    Avg,
    BoolAnd,
    BoolOr,
}

#[derive(Debug, Clone)]
struct Agg {
    kind: AggKind,
    /// `None` for `count(*)`.
    arg: Option<Expr>,
}

/// PostgreSQL's built-in aggregate functions (user-defined aggregates are not recognized).
const OTHER_AGGREGATES: &[&str] = &[
    "array_agg",
    "string_agg",
    "json_agg",
    "jsonb_agg",
    "json_agg_strict",
    "jsonb_agg_strict",
    "json_object_agg",
    "jsonb_object_agg",
    "json_objectagg",
    "json_arrayagg",
    "xmlagg",
    "bit_and",
    "bit_or",
    "bit_xor",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "corr",
    "covar_pop",
    "covar_samp",
    "regr_avgx",
    "regr_avgy",
    "regr_count",
    "regr_intercept",
    "regr_r2",
    "regr_slope",
    "regr_sxx",
    "regr_sxy",
    "regr_syy",
    "mode",
    "percentile_cont",
    "percentile_disc",
    "range_agg",
    "range_intersect_agg",
    "any_value",
    "grouping",
];

fn function_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Function(f) if f.over.is_none() => {
            crate::analyze::name_parts(&f.name).last().map(|n| n.trim_start_matches("pg_catalog.").to_owned())
        }
        _ => None,
    }
}

/// Is `e` itself a call of an aggregate (supported or not)?
fn is_aggregate_call(e: &Expr) -> bool {
    let Expr::Function(f) = e else { return false };
    if f.over.is_some() {
        return false;
    }
    let name = function_name(e).unwrap_or_default();
    matches!(name.as_str(), "count" | "sum" | "min" | "max" | "avg" | "bool_and" | "bool_or" | "every")
        || OTHER_AGGREGATES.contains(&name.as_str())
        || f.filter.is_some()
        || !f.within_group.is_empty()
}

fn contains_aggregate(e: &Expr) -> bool {
    is_aggregate_call(e) || expr_children(e).unwrap_or_default().into_iter().any(contains_aggregate)
}

/// A supported aggregate call, `Ok(None)` for anything that is not an aggregate call, and an
/// error for aggregates the router cannot combine.
fn aggregate(e: &Expr) -> Result<Option<Agg>, PlanError> {
    if !is_aggregate_call(e) {
        return Ok(None);
    }
    let Expr::Function(f) = e else { return Ok(None) };
    let name = function_name(e).unwrap_or_default();
    let kind = match name.as_str() {
        "count" => AggKind::Count,
        "sum" => AggKind::Sum,
        "min" => AggKind::Min,
        "max" => AggKind::Max,
        "avg" => AggKind::Avg,
        "bool_and" | "every" => AggKind::BoolAnd,
        "bool_or" => AggKind::BoolOr,
        _ => return Err(PlanError::unsupported(format!("aggregate function {name}() across shards"))),
    };
    if f.filter.is_some() {
        return Err(PlanError::unsupported("FILTER on aggregates across shards"));
    }
    if !f.within_group.is_empty() {
        return Err(PlanError::unsupported("WITHIN GROUP aggregates across shards"));
    }
    let FunctionArguments::List(list) = &f.args else {
        return Err(PlanError::unsupported(format!("{name}() without arguments across shards")));
    };
    if !list.clauses.is_empty() {
        return Err(PlanError::unsupported("aggregates with ORDER BY or other clauses inside across shards"));
    }
    let distinct = matches!(list.duplicate_treatment, Some(DuplicateTreatment::Distinct));
    let arg = match list.args.as_slice() {
        [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)] if kind == AggKind::Count && !distinct => None,
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(x))] => {
            if contains_aggregate(x) {
                return Err(PlanError::unsupported("nested aggregate calls across shards"));
            }
            Some(x.clone())
        }
        _ => return Err(PlanError::unsupported(format!("{name}() with these arguments across shards"))),
    };
    let kind = match (kind, distinct) {
        (AggKind::Count, true) => AggKind::CountDistinct,
        (k, false) => k,
        (_, true) => return Err(PlanError::unsupported(format!("DISTINCT inside {name}() across shards"))),
    };
    Ok(Some(Agg { kind, arg }))
}

/// Text of an expression with unquoted words folded, for "is this the same expression" checks.
fn norm(e: &Expr) -> String {
    let text = e.to_string();
    crate::parse::lex(&text)
        .into_iter()
        .filter(|t| t.kind != crate::parse::TokenKind::Space)
        .map(|t| match t.kind {
            crate::parse::TokenKind::Word(w) => w,
            _ => text[t.span].to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn number(n: u64) -> Expr {
    Expr::value(SqlValue::Number(n.to_string(), false))
}

fn literal_u64(e: &Expr, what: &str) -> Result<Option<u64>, PlanError> {
    match e {
        Expr::Value(v) => match &v.value {
            SqlValue::Number(n, _) => n.parse::<u64>().map(Some).map_err(|_| {
                PlanError::unsupported(format!("{what} across shards needs a non-negative integer"))
            }),
            SqlValue::Null => Ok(None),
            SqlValue::Placeholder(_) => {
                Err(PlanError::unsupported(format!("{what} with a parameter across shards (use a literal)")))
            }
            _ => Err(PlanError::unsupported(format!("{what} across shards needs an integer literal"))),
        },
        Expr::Nested(x) => literal_u64(x, what),
        _ => Err(PlanError::unsupported(format!("{what} across shards needs an integer literal"))),
    }
}

/// (limit, offset) of the query.
fn limits(q: &Query) -> Result<(Option<u64>, u64), PlanError> {
    let (mut limit, mut offset) = (None, 0);
    match &q.limit_clause {
        None => {}
        Some(LimitClause::LimitOffset { limit: l, offset: o, limit_by }) => {
            if !limit_by.is_empty() {
                return Err(PlanError::unsupported("LIMIT BY across shards"));
            }
            if let Some(l) = l {
                limit = literal_u64(l, "LIMIT")?;
            }
            if let Some(o) = o {
                offset = literal_u64(&o.value, "OFFSET")?.unwrap_or(0);
            }
        }
        Some(LimitClause::OffsetCommaLimit { .. }) => {
            return Err(PlanError::unsupported("LIMIT a, b across shards"))
        }
    }
    if let Some(fetch) = &q.fetch {
        if fetch.with_ties || fetch.percent {
            return Err(PlanError::unsupported("FETCH ... WITH TIES or PERCENT across shards"));
        }
        limit = match &fetch.quantity {
            Some(e) => literal_u64(e, "FETCH FIRST")?,
            None => Some(1),
        };
    }
    Ok((limit, offset))
}

fn sort_key(column: usize, opts: &OrderByOptions) -> Result<SortKey, PlanError> {
    let descending = match &opts.sort {
        None | Some(OrderBySort::Asc) => false,
        Some(OrderBySort::Desc) => true,
        Some(OrderBySort::Using(_)) => {
            return Err(PlanError::unsupported("ORDER BY ... USING across shards"))
        }
    };
    Ok(SortKey { column, descending, nulls_first: opts.nulls_first.unwrap_or(descending) })
}

fn order_by_exprs(q: &Query) -> Result<Vec<OrderByExpr>, PlanError> {
    match &q.order_by {
        None => Ok(Vec::new()),
        Some(OrderBy { kind: OrderByKind::Expressions(list), .. }) => {
            if list.iter().any(|o| o.with_fill.is_some()) {
                return Err(PlanError::unsupported("ORDER BY ... WITH FILL across shards"));
            }
            Ok(list.clone())
        }
        Some(_) => Err(PlanError::unsupported("ORDER BY ALL across shards")),
    }
}

fn shard_order_by(keys: &[SortKey]) -> Option<OrderBy> {
    if keys.is_empty() {
        return None;
    }
    let list = keys
        .iter()
        .map(|k| OrderByExpr {
            expr: number(k.column as u64 + 1),
            options: OrderByOptions {
                sort: Some(if k.descending { OrderBySort::Desc } else { OrderBySort::Asc }),
                nulls_first: Some(k.nulls_first),
            },
            with_fill: None,
        })
        .collect();
    Some(OrderBy { kind: OrderByKind::Expressions(list), interpolate: None })
}

fn asc(column: usize) -> SortKey {
    SortKey { column, descending: false, nulls_first: false }
}

fn helper(expr: Expr, index: usize) -> SelectItem {
    SelectItem::ExprWithAlias { expr, alias: Ident::new(format!("__pgr_{index}")) }
}

/// One visible select item.
struct Item {
    expr: Expr,
    alias: Option<Ident>,
    agg: Option<Agg>,
}

/// Plan a SELECT (body must be a plain SELECT) over several shards.
pub(crate) fn scatter_select(q: &Query) -> Result<Scatter, PlanError> {
    let SetExpr::Select(sel) = q.body.as_ref() else {
        return Err(PlanError::unsupported("UNION/INTERSECT/EXCEPT on sharded tables across shards"));
    };
    if matches!(sel.distinct, Some(sqlparser::ast::Distinct::On(_))) {
        return Err(PlanError::unsupported("DISTINCT ON across shards"));
    }
    let (limit, offset) = limits(q)?;
    let order = order_by_exprs(q)?;
    let wildcard = sel
        .projection
        .iter()
        .any(|i| matches!(i, SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)));
    let mut items = Vec::new();
    if !wildcard {
        for it in &sel.projection {
            let (expr, alias) = match it {
                SelectItem::UnnamedExpr(e) => (e.clone(), None),
                SelectItem::ExprWithAlias { expr, alias } => (expr.clone(), Some(alias.clone())),
                _ => return Err(PlanError::unsupported("this select item across shards")),
            };
            let agg = aggregate(&expr)?;
            if agg.is_none() && contains_aggregate(&expr) {
                return Err(PlanError::unsupported(
                    "expressions over aggregates across shards (select the aggregate itself)",
                ));
            }
            items.push(Item { expr, alias, agg });
        }
    }
    let grouped = !matches!(&sel.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty());
    let aggregating = items.iter().any(|i| i.agg.is_some())
        || grouped
        || sel.having.is_some()
        || order.iter().any(|o| contains_aggregate(&o.expr));
    let mut shard_query = q.clone();
    let mut scatter = Scatter {
        sql: String::new(),
        columns: Vec::new(),
        visible: 0,
        shard_order: Vec::new(),
        group: None,
        having: None,
        final_order: None,
        offset,
        limit,
        write: false,
        passthrough: None,
    };
    if aggregating {
        if wildcard {
            return Err(PlanError::unsupported("SELECT * with aggregates across shards"));
        }
        if sel.distinct.is_some() {
            return Err(PlanError::unsupported("SELECT DISTINCT with aggregates or GROUP BY across shards"));
        }
        Aggregation::new(sel, items).plan(&order, &mut shard_query, &mut scatter)?;
        shard_query.limit_clause = None;
        shard_query.fetch = None;
    } else {
        if wildcard {
            plan_passthrough(sel, &order, &mut shard_query, &mut scatter)?;
        } else {
            plan_plain(sel, &items, &order, &mut shard_query, &mut scatter)?;
        }
        push_limit(&mut shard_query, &scatter);
    }
    scatter.sql = shard_query.to_string();
    Ok(scatter)
}

fn push_limit(shard_query: &mut Query, scatter: &Scatter) {
    shard_query.fetch = None;
    shard_query.limit_clause = match (scatter.limit, scatter.group.is_some()) {
        (Some(l), false) => Some(LimitClause::LimitOffset {
            limit: Some(number(l.saturating_add(scatter.offset))),
            offset: None,
            limit_by: Vec::new(),
        }),
        _ => None,
    };
}

fn select_mut(q: &mut Query) -> Option<&mut Select> {
    match q.body.as_mut() {
        SetExpr::Select(s) => Some(s),
        _ => None,
    }
}

/// Map an ORDER BY expression to a visible item: position, output alias, or the same text.
fn visible_column(items: &[Item], e: &Expr) -> Result<Option<usize>, PlanError> {
    if let Expr::Value(v) = e {
        if let SqlValue::Number(n, _) = &v.value {
            return match n.parse::<usize>() {
                Ok(p) if p >= 1 && p <= items.len() => Ok(Some(p - 1)),
                _ => Err(PlanError::unsupported("ORDER BY position out of range")),
            };
        }
    }
    if let Expr::Identifier(id) = e {
        let name = crate::analyze::ident(id);
        if let Some(p) =
            items.iter().position(|i| i.alias.as_ref().map(crate::analyze::ident) == Some(name.clone()))
        {
            return Ok(Some(p));
        }
    }
    let text = norm(e);
    Ok(items.iter().position(|i| norm(&i.expr) == text))
}

fn plan_plain(
    sel: &Select,
    items: &[Item],
    order: &[OrderByExpr],
    shard_query: &mut Query,
    scatter: &mut Scatter,
) -> Result<(), PlanError> {
    let n = items.len();
    scatter.columns = (0..n).map(OutputColumn::Column).collect();
    scatter.visible = n;
    let mut helpers = Vec::new();
    let mut keys = Vec::new();
    for o in order {
        let col = match visible_column(items, &o.expr)? {
            Some(c) => c,
            None if sel.distinct.is_some() => {
                return Err(PlanError::unsupported(
                    "SELECT DISTINCT across shards needs the ORDER BY expressions in the select list",
                ))
            }
            None => {
                let c = n + helpers.len();
                helpers.push(helper(o.expr.clone(), c));
                scatter.columns.push(OutputColumn::Column(c));
                c
            }
        };
        keys.push(sort_key(col, &o.options)?);
    }
    if sel.distinct.is_some() {
        scatter.group = Some((0..n).collect());
        for c in 0..n {
            if !keys.iter().any(|k| k.column == c) {
                keys.push(asc(c));
            }
        }
        shard_query.order_by = shard_order_by(&keys);
    }
    scatter.shard_order = keys;
    if let Some(s) = select_mut(shard_query) {
        s.projection.extend(helpers);
    }
    Ok(())
}

fn plan_passthrough(
    sel: &Select,
    order: &[OrderByExpr],
    shard_query: &mut Query,
    scatter: &mut Scatter,
) -> Result<(), PlanError> {
    if sel.distinct.is_some() {
        return Err(PlanError::unsupported("SELECT DISTINCT * across shards (list the columns)"));
    }
    let mut helpers = Vec::new();
    for o in order {
        let mut expr = o.expr.clone();
        if let Expr::Value(v) = &expr {
            if matches!(v.value, SqlValue::Number(..)) {
                return Err(PlanError::unsupported("ORDER BY a position with SELECT * across shards"));
            }
        }
        if let Expr::Identifier(id) = &expr {
            let name = crate::analyze::ident(id);
            let aliased = sel.projection.iter().find_map(|i| match i {
                SelectItem::ExprWithAlias { expr, alias } if crate::analyze::ident(alias) == name => {
                    Some(expr.clone())
                }
                _ => None,
            });
            if let Some(e) = aliased {
                expr = e;
            }
        }
        let k = helpers.len();
        helpers.push(SelectItem::ExprWithAlias { expr, alias: Ident::new(format!("__pgr_s{k}")) });
        scatter.shard_order.push(sort_key(k, &o.options)?);
    }
    scatter.passthrough = Some(PassThrough { helpers: helpers.len() });
    if let Some(s) = select_mut(shard_query) {
        s.projection.extend(helpers);
    }
    Ok(())
}

/// The state of planning an aggregating SELECT.
struct Aggregation<'q> {
    sel: &'q Select,
    items: Vec<Item>,
    /// Shard select list.
    shard: Vec<SelectItem>,
    merged: Vec<OutputColumn>,
    group: Vec<usize>,
    group_exprs: Vec<(String, usize)>,
    /// The `count(DISTINCT x)` argument and its shard column.
    distinct: Option<(String, Expr, usize)>,
}

impl<'q> Aggregation<'q> {
    fn new(sel: &'q Select, items: Vec<Item>) -> Self {
        Aggregation {
            sel,
            items,
            shard: Vec::new(),
            merged: Vec::new(),
            group: Vec::new(),
            group_exprs: Vec::new(),
            distinct: None,
        }
    }

    fn add_hidden(&mut self, expr: Expr) -> usize {
        let c = self.shard.len();
        self.shard.push(helper(expr, c));
        c
    }

    fn distinct_column(&mut self, arg: &Expr) -> Result<usize, PlanError> {
        let text = norm(arg);
        match &self.distinct {
            Some((t, _, c)) if *t == text => Ok(*c),
            Some(_) => {
                Err(PlanError::unsupported("COUNT(DISTINCT ...) of more than one expression across shards"))
            }
            None => {
                let c = self.add_hidden(arg.clone());
                self.distinct = Some((text, arg.clone(), c));
                Ok(c)
            }
        }
    }

    /// The merged column of an aggregate whose first shard column is `c` (visible, already
    /// pushed) or a new hidden one.
    fn agg_column(
        &mut self,
        agg: &Agg,
        original: &Expr,
        visible_at: Option<usize>,
    ) -> Result<OutputColumn, PlanError> {
        let arg = agg.arg.clone();
        let place = |me: &mut Self, e: Expr| match visible_at {
            Some(c) => c,
            None => me.add_hidden(e),
        };
        Ok(match agg.kind {
            AggKind::Count => OutputColumn::Count(place(self, original.clone())),
            AggKind::Sum => OutputColumn::Sum(place(self, original.clone())),
            AggKind::Min => OutputColumn::Min(place(self, original.clone())),
            AggKind::Max => OutputColumn::Max(place(self, original.clone())),
            AggKind::BoolAnd => OutputColumn::BoolAnd(place(self, original.clone())),
            AggKind::BoolOr => OutputColumn::BoolOr(place(self, original.clone())),
            AggKind::Avg => {
                let arg = arg.ok_or_else(|| PlanError::unsupported("avg(*) across shards"))?;
                let sum = place(self, call("sum", &arg));
                let count = self.add_hidden(call("count", &arg));
                OutputColumn::Avg { sum, count }
            }
            AggKind::CountDistinct => {
                let arg = arg.ok_or_else(|| PlanError::unsupported("count(DISTINCT *) across shards"))?;
                if visible_at.is_none() {
                    // A hidden count(DISTINCT x) needs no shard column of its own.
                }
                OutputColumn::CountDistinct(self.distinct_column(&arg)?)
            }
        })
    }

    fn plan(
        mut self,
        order: &[OrderByExpr],
        shard_query: &mut Query,
        scatter: &mut Scatter,
    ) -> Result<(), PlanError> {
        // Visible items first, at their own positions.
        let items = std::mem::take(&mut self.items);
        for (i, it) in items.iter().enumerate() {
            let shard_item = match (&it.agg, &it.alias) {
                (Some(Agg { kind: AggKind::Avg, arg: Some(arg) }), alias) => SelectItem::ExprWithAlias {
                    expr: call("sum", arg),
                    alias: alias.clone().unwrap_or_else(|| Ident::new("avg")),
                },
                (_, Some(alias)) => SelectItem::ExprWithAlias { expr: it.expr.clone(), alias: alias.clone() },
                (_, None) => SelectItem::UnnamedExpr(it.expr.clone()),
            };
            self.shard.push(shard_item);
            debug_assert_eq!(self.shard.len(), i + 1);
        }
        for (i, it) in items.iter().enumerate() {
            let col = match &it.agg {
                Some(agg) => self.agg_column(agg, &it.expr, Some(i))?,
                None => OutputColumn::Column(i),
            };
            self.merged.push(col);
        }
        self.items = items;
        scatter.visible = self.items.len();
        self.plan_group()?;
        if let Some(h) = &self.sel.having {
            scatter.having = Some(self.predicate(h)?);
        }
        let user_keys = order
            .iter()
            .map(|o| {
                let col = self.merged_for(&o.expr)?.ok_or_else(|| PlanError::unsupported(ORDER_BY_REASON))?;
                sort_key(col, &o.options)
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.plan_order(user_keys, scatter);
        scatter.group = Some(self.group.clone());
        scatter.columns = std::mem::take(&mut self.merged);
        shard_query.order_by = shard_order_by(&scatter.shard_order);
        if let Some(s) = select_mut(shard_query) {
            s.projection = std::mem::take(&mut self.shard);
            s.having = None;
            if let Some((_, x, _)) = &self.distinct {
                match &mut s.group_by {
                    GroupByExpr::Expressions(exprs, _) => exprs.push(x.clone()),
                    GroupByExpr::All(_) => {}
                }
            }
        }
        Ok(())
    }

    fn plan_group(&mut self) -> Result<(), PlanError> {
        let exprs = match &self.sel.group_by {
            GroupByExpr::Expressions(exprs, modifiers) if modifiers.is_empty() => exprs.clone(),
            _ => {
                return Err(PlanError::unsupported(
                    "GROUP BY ALL, ROLLUP, CUBE or GROUPING SETS across shards",
                ))
            }
        };
        for e in &exprs {
            if matches!(e, Expr::GroupingSets(_) | Expr::Cube(_) | Expr::Rollup(_)) {
                return Err(PlanError::unsupported("GROUP BY ROLLUP, CUBE or GROUPING SETS across shards"));
            }
            let col = match visible_column(&self.items, e) {
                Ok(Some(c)) if self.items[c].agg.is_none() => c,
                Ok(Some(_)) => return Err(PlanError::unsupported("GROUP BY an aggregate")),
                Ok(None) => self.add_hidden(e.clone()),
                Err(err) => return Err(err),
            };
            self.group_exprs.push((norm(e), col));
            if !self.group.contains(&col) {
                self.group.push(col);
            }
        }
        Ok(())
    }

    fn plan_order(&mut self, user_keys: Vec<SortKey>, scatter: &mut Scatter) {
        // Shard columns of the user's keys when they are all plain group keys.
        let on_group: Option<Vec<SortKey>> = user_keys
            .iter()
            .map(|k| match self.merged.get(k.column) {
                Some(OutputColumn::Column(c)) if self.group.contains(c) => Some(SortKey { column: *c, ..*k }),
                _ => None,
            })
            .collect();
        let mut shard_order = match on_group {
            Some(keys) if !keys.is_empty() => {
                let mut seen = Vec::new();
                let mut out: Vec<SortKey> = Vec::new();
                for k in keys {
                    if !seen.contains(&k.column) {
                        seen.push(k.column);
                        out.push(k);
                    }
                }
                for &g in &self.group {
                    if !seen.contains(&g) {
                        out.push(asc(g));
                    }
                }
                out
            }
            _ => {
                if !user_keys.is_empty() && !self.group.is_empty() {
                    scatter.final_order = Some(user_keys);
                }
                self.group.iter().map(|&g| asc(g)).collect()
            }
        };
        if let Some((_, _, c)) = &self.distinct {
            shard_order.push(asc(*c));
        }
        scatter.shard_order = shard_order;
    }

    /// The merged column for an ORDER BY / HAVING expression, adding hidden columns as needed.
    fn merged_for(&mut self, e: &Expr) -> Result<Option<usize>, PlanError> {
        if let Some(c) = visible_column(&self.items, e)? {
            return Ok(Some(c));
        }
        if let Some(agg) = aggregate(e)? {
            let col = self.agg_column(&agg, e, None)?;
            return Ok(Some(self.push_merged(col)));
        }
        let text = norm(e);
        if let Some(&(_, c)) = self.group_exprs.iter().find(|(t, _)| *t == text) {
            return Ok(Some(self.push_merged(OutputColumn::Column(c))));
        }
        Ok(None)
    }

    fn push_merged(&mut self, col: OutputColumn) -> usize {
        if let Some(p) = self.merged.iter().position(|m| *m == col) {
            return p;
        }
        self.merged.push(col);
        self.merged.len() - 1
    }

    fn predicate(&mut self, e: &Expr) -> Result<Predicate, PlanError> {
        let unsupported = || PlanError::unsupported(HAVING_REASON);
        Ok(match e {
            Expr::Nested(x) => self.predicate(x)?,
            Expr::BinaryOp { left, op: BinaryOperator::And, right } => {
                Predicate::And(Box::new(self.predicate(left)?), Box::new(self.predicate(right)?))
            }
            Expr::BinaryOp { left, op: BinaryOperator::Or, right } => {
                Predicate::Or(Box::new(self.predicate(left)?), Box::new(self.predicate(right)?))
            }
            Expr::UnaryOp { op: UnaryOperator::Not, expr } => Predicate::Not(Box::new(self.predicate(expr)?)),
            Expr::BinaryOp { left, op, right } => {
                let op = match op {
                    BinaryOperator::Eq => CompareOp::Eq,
                    BinaryOperator::NotEq => CompareOp::NotEq,
                    BinaryOperator::Lt => CompareOp::Lt,
                    BinaryOperator::LtEq => CompareOp::LtEq,
                    BinaryOperator::Gt => CompareOp::Gt,
                    BinaryOperator::GtEq => CompareOp::GtEq,
                    _ => return Err(unsupported()),
                };
                Predicate::Compare { left: self.operand(left)?, op, right: self.operand(right)? }
            }
            Expr::IsNull(x) => Predicate::IsNull { operand: self.operand(x)?, negated: false },
            Expr::IsNotNull(x) => Predicate::IsNull { operand: self.operand(x)?, negated: true },
            _ => return Err(unsupported()),
        })
    }

    fn operand(&mut self, e: &Expr) -> Result<Operand, PlanError> {
        match e {
            Expr::Nested(x) => return self.operand(x),
            Expr::Value(v) => match &v.value {
                SqlValue::Number(n, _) => return Ok(Operand::Number(n.clone())),
                SqlValue::SingleQuotedString(s) => return Ok(Operand::Text(s.clone())),
                SqlValue::Placeholder(p) => {
                    return param_number(p)
                        .map(Operand::Param)
                        .ok_or_else(|| PlanError::unsupported(HAVING_REASON))
                }
                _ => {}
            },
            Expr::UnaryOp { op: UnaryOperator::Minus, expr } => {
                if let Expr::Value(v) = expr.as_ref() {
                    if let SqlValue::Number(n, _) = &v.value {
                        return Ok(Operand::Number(format!("-{n}")));
                    }
                }
            }
            _ => {}
        }
        match self.merged_for(e)? {
            Some(c) => Ok(Operand::Column(c)),
            None => Err(PlanError::unsupported(HAVING_REASON)),
        }
    }
}

/// `name(arg)`.
fn call(name: &str, arg: &Expr) -> Expr {
    Expr::Function(sqlparser::ast::Function {
        name: sqlparser::ast::ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(sqlparser::ast::FunctionArgumentList {
            duplicate_treatment: None,
            args: vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(arg.clone()))],
            clauses: Vec::new(),
        }),
        within_group: Vec::new(),
        filter: None,
        null_treatment: None,
        over: None,
    })
}
