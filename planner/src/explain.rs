//! The stable text form of a [`Plan`] (`SHOW ROUTE FOR`, golden tests).
//!
//! One node per line, children indented two spaces per level, every line ending in `\n`.
//! The root line ends with ` class=<class>` and, when the statement has placeholders,
//! ` params=<n>`. Nodes:
//!
//! ```text
//! Route any                                   Target::Any
//! Route any keyspace=commerce                 Target::AnyOf
//! Route unsharded keyspace=main
//! Route named keyspace=commerce shard=-80     (keyspace= only when given)
//! Route keys keyspace=commerce vindex=hash_id(users.id) values=[1, $2]
//! Route all keyspace=commerce
//!   Scatter [write]                           when the route has a Scatter
//!     sql: SELECT ...
//!     columns: [col0, count(1), avg(2/5)] visible=3    or: columns: passthrough helpers=1
//!     order: [0 DESC NULLS FIRST, 1 ASC NULLS LAST]    (shard_order; omitted when empty)
//!     group: [0]                              (omitted when not aggregating)
//!     having: (col1 > 10 AND col0 IS NOT NULL)
//!     final_order: [1 DESC NULLS FIRST]
//!     offset=0 limit=10                       (omitted when offset 0 and no limit)
//! InsertSplit keyspace=commerce table=orders vindex=hash_id(orders.user_id) keys=[1, $2, 3] returning
//! Broadcast keyspaces=[commerce] write
//! Transaction begin | commit | rollback | savepoint s | release s | rollback_to s | two_phase
//! Session
//! ShowRoute                                   the inner plan as a child
//! Multi                                       one child per statement
//! ```
//!
//! Merged columns: `colN` (pass-through of shard column N), `count(N)`, `sum(N)`, `min(N)`,
//! `max(N)`, `avg(S/C)`, `count_distinct(N)`, `bool_and(N)`, `bool_or(N)`. HAVING operands:
//! `colN` (merged column), numbers as written, `'text'`, `$n`.

use std::fmt::Write;

use crate::plan::{
    Action, CompareOp, KeyExpr, Operand, OutputColumn, Plan, Predicate, Scatter, SortKey, Target, TxControl,
};

impl Plan {
    /// The stable multi-line description (see the module docs of `explain.rs`).
    #[must_use]
    pub fn explain(&self) -> String {
        let mut out = String::new();
        write_plan(&mut out, self, 0);
        out
    }
}

fn line(out: &mut String, depth: usize, text: &str) {
    for _ in 0..depth {
        out.push_str("  ");
    }
    out.push_str(text);
    out.push('\n');
}

fn write_plan(out: &mut String, plan: &Plan, depth: usize) {
    let mut head = match &plan.action {
        Action::Route(r) => target(&r.target),
        Action::InsertSplit(s) => {
            format!(
                "InsertSplit keyspace={} table={} vindex={}({}) keys={}{}",
                s.keyspace,
                s.table,
                s.vindex.vindex.name(),
                s.vindex.column,
                keys(&s.keys),
                if s.returning { " returning" } else { "" }
            ) + &s
                .auto_increment
                .as_ref()
                .map(|a| {
                    format!(" auto_increment={} sequence={}.{}", a.column, a.sequence_keyspace, a.sequence)
                })
                .unwrap_or_default()
                + &s.lookups
                    .iter()
                    .map(|l| {
                        format!(
                            " lookup={}({}) in={} values={}",
                            l.vindex.vindex.name(),
                            l.vindex.column,
                            l.vindex.lookup_keyspace.as_deref().unwrap_or("?"),
                            keys(&l.values)
                        )
                    })
                    .collect::<String>()
        }
        Action::Broadcast(b) => {
            format!("Broadcast keyspaces=[{}]{}", b.keyspaces.join(", "), if b.write { " write" } else { "" })
        }
        Action::Transaction(t) => format!("Transaction {}", tx(t)),
        Action::Session => "Session".to_owned(),
        Action::ShowRoute(_) => "ShowRoute".to_owned(),
        Action::Multi(_) => "Multi".to_owned(),
        Action::CopyIn(c) => format!(
            "CopyIn keyspace={} table={} key={} vindex={} position={} format={:?}{}",
            c.keyspace,
            c.table,
            c.column,
            c.vindex.vindex.name(),
            c.position.map_or_else(|| "from-catalog".to_owned(), |p| p.to_string()),
            c.format.kind,
            if c.format.header { " header" } else { "" }
        ),
    };
    let _ = write!(head, " class={}", plan.class.as_str());
    if plan.params > 0 {
        let _ = write!(head, " params={}", plan.params);
    }
    line(out, depth, &head);
    match &plan.action {
        Action::Route(r) => {
            if let Some(s) = &r.scatter {
                write_scatter(out, s, depth + 1);
            }
        }
        Action::ShowRoute(inner) => write_plan(out, inner, depth + 1),
        Action::Multi(plans) => {
            for p in plans {
                write_plan(out, p, depth + 1);
            }
        }
        _ => {}
    }
}

fn target(t: &Target) -> String {
    match t {
        Target::Any => "Route any".to_owned(),
        Target::AnyOf { keyspace } => format!("Route any keyspace={keyspace}"),
        Target::Unsharded { keyspace } => format!("Route unsharded keyspace={keyspace}"),
        Target::Keys { keyspace, vindex, values } => format!(
            "Route keys keyspace={keyspace} vindex={}({}){} values={}",
            vindex.vindex.name(),
            vindex.column,
            vindex.lookup_keyspace.as_ref().map(|k| format!(" lookup in={k}")).unwrap_or_default(),
            keys(values)
        ),
        Target::All { keyspace } => format!("Route all keyspace={keyspace}"),
        Target::Named { keyspace: Some(ks), shard } => format!("Route named keyspace={ks} shard={shard}"),
        Target::Named { keyspace: None, shard } => format!("Route named shard={shard}"),
    }
}

fn keys(values: &[KeyExpr]) -> String {
    let parts: Vec<String> = values
        .iter()
        .map(|v| match v {
            KeyExpr::Literal(v) => v.to_string(),
            KeyExpr::Param(n) => format!("${n}"),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

fn tx(t: &TxControl) -> String {
    match t {
        TxControl::Begin => "begin".to_owned(),
        TxControl::Commit => "commit".to_owned(),
        TxControl::Rollback => "rollback".to_owned(),
        TxControl::Savepoint(s) => format!("savepoint {s}"),
        TxControl::Release(s) => format!("release {s}"),
        TxControl::RollbackTo(s) => format!("rollback_to {s}"),
        TxControl::TwoPhase => "two_phase".to_owned(),
    }
}

fn sort_keys(keys: &[SortKey]) -> String {
    let parts: Vec<String> = keys
        .iter()
        .map(|k| {
            format!(
                "{} {} NULLS {}",
                k.column,
                if k.descending { "DESC" } else { "ASC" },
                if k.nulls_first { "FIRST" } else { "LAST" }
            )
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

fn column(c: &OutputColumn) -> String {
    match c {
        OutputColumn::Column(i) => format!("col{i}"),
        OutputColumn::Count(i) => format!("count({i})"),
        OutputColumn::Sum(i) => format!("sum({i})"),
        OutputColumn::Min(i) => format!("min({i})"),
        OutputColumn::Max(i) => format!("max({i})"),
        OutputColumn::Avg { sum, count } => format!("avg({sum}/{count})"),
        OutputColumn::CountDistinct(i) => format!("count_distinct({i})"),
        OutputColumn::BoolAnd(i) => format!("bool_and({i})"),
        OutputColumn::BoolOr(i) => format!("bool_or({i})"),
    }
}

fn operand(o: &Operand) -> String {
    match o {
        Operand::Column(i) => format!("col{i}"),
        Operand::Number(n) => n.clone(),
        Operand::Text(t) => format!("'{}'", t.replace('\'', "''")),
        Operand::Param(n) => format!("${n}"),
    }
}

fn predicate(p: &Predicate) -> String {
    match p {
        Predicate::And(a, b) => format!("({} AND {})", predicate(a), predicate(b)),
        Predicate::Or(a, b) => format!("({} OR {})", predicate(a), predicate(b)),
        Predicate::Not(a) => format!("NOT {}", predicate(a)),
        Predicate::Compare { left, op, right } => {
            let op = match op {
                CompareOp::Eq => "=",
                CompareOp::NotEq => "<>",
                CompareOp::Lt => "<",
                CompareOp::LtEq => "<=",
                CompareOp::Gt => ">",
                CompareOp::GtEq => ">=",
            };
            format!("{} {op} {}", operand(left), operand(right))
        }
        Predicate::IsNull { operand: o, negated } => {
            format!("{} IS {}NULL", operand(o), if *negated { "NOT " } else { "" })
        }
    }
}

fn write_scatter(out: &mut String, s: &Scatter, depth: usize) {
    line(out, depth, if s.write { "Scatter write" } else { "Scatter" });
    let d = depth + 1;
    line(out, d, &format!("sql: {}", s.sql));
    match &s.passthrough {
        Some(p) => line(out, d, &format!("columns: passthrough helpers={}", p.helpers)),
        None => {
            let cols: Vec<String> = s.columns.iter().map(column).collect();
            line(out, d, &format!("columns: [{}] visible={}", cols.join(", "), s.visible));
        }
    }
    if !s.shard_order.is_empty() {
        line(out, d, &format!("order: {}", sort_keys(&s.shard_order)));
    }
    if let Some(g) = &s.group {
        let g: Vec<String> = g.iter().map(usize::to_string).collect();
        line(out, d, &format!("group: [{}]", g.join(", ")));
    }
    if let Some(h) = &s.having {
        line(out, d, &format!("having: {}", predicate(h)));
    }
    if let Some(f) = &s.final_order {
        line(out, d, &format!("final_order: {}", sort_keys(f)));
    }
    if s.offset > 0 || s.limit.is_some() {
        let limit = s.limit.map_or_else(|| "none".to_owned(), |l| l.to_string());
        line(out, d, &format!("offset={} limit={limit}", s.offset));
    }
}
