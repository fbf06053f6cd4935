//! Resolve the tables of a statement and extract its sharding-key predicates.
//!
//! The walk visits every query block of a statement (the top SELECT, subqueries in any
//! expression, derived tables, CTE bodies, set-operation arms, data-modifying sub-statements)
//! and records:
//! - every relation and its class (catalog, reference, unsharded, unknown, sharded);
//! - every occurrence ("instance") of a sharded table, and which instances are co-located:
//!   joined by an equality of their primary vindex columns on the same vindex (`ON` or `WHERE`
//!   conjuncts, `USING`, correlated equalities with an outer block), kept in a union-find;
//! - key predicates: top-level `AND` conjuncts of WHERE (and of inner-join ONs when the FROM
//!   item has no outer join) of the form `col = literal|$n` or `col IN (…)` on a column with a
//!   usable vindex (a functional one, or a lookup vindex whose table's keyspace is known; the
//!   cheapest when there are several), the literals converted to the vindex's column type.
//!
//! Column references resolve conservatively: `alias.col` to the binding of that name (innermost
//! block first); a bare `col` only to the one relation of the current block with a vindex on
//! `col` (if another relation there had the same column PostgreSQL would reject the statement
//! as ambiguous, so this never misroutes).

use std::sync::Arc;

use sqlparser::ast::{
    BinaryOperator, Delete, Expr, FromTable, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr,
    Insert, JoinConstraint, JoinOperator, ObjectName, Query, Select, SelectItem, SetExpr, Statement,
    TableFactor, TableObject, TableWithJoins, Update, UpdateTableFromKind,
};
use vindex::{TableInfo, ValidatedVSchema, Vindex};

use crate::error::PlanError;
pub(crate) use crate::expr::{
    classify_name, conjuncts, expr_children, ident, key_error, key_expr, looks_like_query, name_parts,
    param_number,
};
use crate::plan::{KeyExpr, KeyVindex, Target};
use crate::planner::LookupPlaces;

/// Where a query block sits in the statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockKind {
    Top,
    Subquery,
    Derived,
    Lateral,
    Cte,
    SetOp,
    /// A data-modifying statement inside a query (`WITH d AS (DELETE …)`).
    NestedWrite,
}

impl BlockKind {
    /// Why a sharded table in such a block cannot run across shards.
    pub(crate) fn across_shards(self) -> &'static str {
        match self {
            BlockKind::Top => "this statement across shards",
            BlockKind::Subquery => "subquery on a sharded table across shards",
            BlockKind::Derived => "subquery in FROM on a sharded table across shards",
            BlockKind::Lateral => "LATERAL subquery on a sharded table across shards",
            BlockKind::Cte => "WITH (common table expression) on a sharded table across shards",
            BlockKind::SetOp => "UNION/INTERSECT/EXCEPT on sharded tables across shards",
            BlockKind::NestedWrite => "data-modifying WITH on a sharded table across shards",
        }
    }
}

/// What a relation name refers to.
#[derive(Debug, Clone)]
pub(crate) enum RelClass<'v> {
    Catalog,
    Reference(&'v TableInfo),
    Unsharded(String),
    /// Not in the VSchema: belongs to the default keyspace.
    Unknown(String),
    Sharded(&'v TableInfo),
}

/// The keyspace picture of a whole statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Class {
    /// No tables, or only catalog relations.
    NoTables,
    Reference(String),
    Unsharded(String),
    Sharded(String),
}

#[derive(Debug, Clone)]
pub(crate) struct Instance<'v> {
    pub table: &'v TableInfo,
    pub block: usize,
}

/// A usable sharding-key predicate on one instance.
#[derive(Debug, Clone)]
pub(crate) struct KeyPred {
    pub instance: usize,
    pub column: String,
    pub vindex: Arc<dyn Vindex>,
    /// The keyspace of a lookup vindex's table.
    pub lookup_keyspace: Option<String>,
    pub primary: bool,
    pub values: Vec<KeyExpr>,
}

impl KeyPred {
    fn rank(&self) -> (u32, bool, usize) {
        (self.vindex.cost(), !self.primary, self.values.len())
    }

    fn single_unique(&self) -> Option<&KeyExpr> {
        match self.values.as_slice() {
            [v] if self.vindex.is_unique() => Some(v),
            _ => None,
        }
    }

    pub(crate) fn key_vindex(&self) -> KeyVindex {
        KeyVindex {
            column: self.column.as_str().into(),
            vindex: self.vindex.clone(),
            lookup_keyspace: self.lookup_keyspace.as_deref().map(Arc::from),
        }
    }
}

#[derive(Debug, Clone)]
struct Binding {
    name: String,
    instance: Option<usize>,
}

/// The analysis of one statement.
pub(crate) struct Analysis<'v> {
    vs: &'v ValidatedVSchema,
    lookups: &'v LookupPlaces,
    pub rels: Vec<RelClass<'v>>,
    pub instances: Vec<Instance<'v>>,
    parent: Vec<usize>,
    pub keys: Vec<KeyPred>,
    pub blocks: Vec<BlockKind>,
    pub top_block: Option<usize>,
    /// Blocks with window functions.
    pub windows: Vec<usize>,
    pub nested_writes: bool,
    pub select_into: bool,
    /// An expression sqlparser shapes this walk does not look into, which seems to hold a query.
    pub opaque: bool,
    /// The first sharding-key literal that could not be converted.
    pub error: Option<PlanError>,
    frames: Vec<Vec<Binding>>,
    ctes: Vec<Vec<String>>,
    current: Vec<usize>,
}

impl<'v> Analysis<'v> {
    pub(crate) fn new(vs: &'v ValidatedVSchema, lookups: &'v LookupPlaces) -> Self {
        Analysis {
            vs,
            lookups,
            rels: Vec::new(),
            instances: Vec::new(),
            parent: Vec::new(),
            keys: Vec::new(),
            blocks: Vec::new(),
            top_block: None,
            windows: Vec::new(),
            nested_writes: false,
            select_into: false,
            opaque: false,
            error: None,
            frames: Vec::new(),
            ctes: Vec::new(),
            current: Vec::new(),
        }
    }

    fn new_block(&mut self, kind: BlockKind) -> usize {
        self.blocks.push(kind);
        let id = self.blocks.len() - 1;
        if kind == BlockKind::Top && self.top_block.is_none() {
            self.top_block = Some(id);
        }
        id
    }

    fn enter(&mut self, kind: BlockKind) -> usize {
        let id = self.new_block(kind);
        self.frames.push(Vec::new());
        self.current.push(id);
        id
    }

    fn leave(&mut self) {
        self.frames.pop();
        self.current.pop();
    }

    fn find(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[ra] = rb;
        }
    }

    // ---- relations ------------------------------------------------------------------------

    fn is_cte(&self, name: &ObjectName) -> bool {
        let parts = name_parts(name);
        parts.len() == 1 && self.ctes.iter().rev().any(|names| names.contains(&parts[0]))
    }

    /// Record a relation of the current block; returns its instance if sharded.
    fn add_relation(&mut self, name: &ObjectName, alias: Option<String>) -> Option<usize> {
        let bind_name = alias.unwrap_or_else(|| name_parts(name).last().cloned().unwrap_or_default());
        if self.is_cte(name) {
            self.bind(Binding { name: bind_name, instance: None });
            return None;
        }
        let class = classify_name(self.vs, name);
        let instance = match &class {
            RelClass::Sharded(t) => {
                let block = self.current.last().copied().unwrap_or(0);
                self.instances.push(Instance { table: t, block });
                self.parent.push(self.parent.len());
                Some(self.instances.len() - 1)
            }
            _ => None,
        };
        self.rels.push(class);
        self.bind(Binding { name: bind_name, instance });
        instance
    }

    fn bind(&mut self, b: Binding) {
        if let Some(frame) = self.frames.last_mut() {
            frame.push(b);
        }
    }

    fn bind_twj(&mut self, twj: &TableWithJoins, conds: &mut Vec<(Expr, bool)>, outer: bool) {
        let outer =
            outer || twj.joins.iter().any(|j| !is_inner(&j.join_operator)) || has_outer(&twj.relation);
        self.bind_factor(&twj.relation, conds, outer);
        for join in &twj.joins {
            let right = self.bind_factor(&join.relation, conds, outer);
            let inner = is_inner(&join.join_operator);
            match join_constraint(&join.join_operator) {
                Some(JoinConstraint::On(e)) => conds.push((e.clone(), inner && !outer)),
                Some(JoinConstraint::Using(cols)) => {
                    for col in cols {
                        if let (Some(r), Some(c)) = (right, name_parts(col).last()) {
                            self.using_edge(r, c);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn bind_factor(&mut self, tf: &TableFactor, conds: &mut Vec<(Expr, bool)>, outer: bool) -> Option<usize> {
        match tf {
            TableFactor::Table { name, alias, args, .. } => {
                if let Some(args) = args {
                    for arg in &args.args {
                        self.walk_function_arg(arg);
                    }
                    self.bind(Binding { name: alias_name(alias).unwrap_or_default(), instance: None });
                    return None;
                }
                self.add_relation(name, alias_name(alias))
            }
            TableFactor::Derived { lateral, subquery, alias, .. } => {
                let kind = if *lateral { BlockKind::Lateral } else { BlockKind::Derived };
                self.walk_query(subquery, kind);
                self.bind(Binding { name: alias_name(alias).unwrap_or_default(), instance: None });
                None
            }
            TableFactor::TableFunction { expr, alias } => {
                self.walk_expr(expr);
                self.bind(Binding { name: alias_name(alias).unwrap_or_default(), instance: None });
                None
            }
            TableFactor::Function { args, alias, .. } => {
                for arg in args {
                    self.walk_function_arg(arg);
                }
                self.bind(Binding { name: alias_name(alias).unwrap_or_default(), instance: None });
                None
            }
            TableFactor::UNNEST { array_exprs, alias, .. } => {
                for e in array_exprs {
                    self.walk_expr(e);
                }
                self.bind(Binding { name: alias_name(alias).unwrap_or_default(), instance: None });
                None
            }
            TableFactor::NestedJoin { table_with_joins, .. } => {
                self.bind_twj(table_with_joins, conds, outer);
                None
            }
            other => {
                self.opaque |= looks_like_query(&other.to_string());
                None
            }
        }
    }

    /// `JOIN r USING (c)`: co-locate `r` with an earlier instance of the block whose primary
    /// vindex column is `c` on the same vindex.
    fn using_edge(&mut self, right: usize, col: &str) {
        let frame: Vec<usize> = self.frames.last().into_iter().flatten().filter_map(|b| b.instance).collect();
        for left in frame.into_iter().filter(|&l| l != right) {
            if self.colocated(left, col, right, col) {
                self.union(left, right);
            }
        }
    }

    fn colocated(&self, a: usize, ca: &str, b: usize, cb: &str) -> bool {
        let (ta, tb) = (self.instances[a].table, self.instances[b].table);
        match (ta.primary_vindex(), tb.primary_vindex()) {
            (Some(pa), Some(pb)) => {
                pa.column == ca
                    && pb.column == cb
                    && pa.vindex.name() == pb.vindex.name()
                    && ta.keyspace() == tb.keyspace()
            }
            _ => false,
        }
    }

    // ---- conditions -----------------------------------------------------------------------

    /// Resolve a column reference to (instance, column).
    fn resolve(&self, e: &Expr) -> Option<(usize, String)> {
        match e {
            Expr::Nested(inner) => self.resolve(inner),
            Expr::Identifier(id) => {
                let col = ident(id);
                let frame = self.frames.last()?;
                let mut found = frame
                    .iter()
                    .filter_map(|b| b.instance)
                    .filter(|&i| self.instances[i].table.column_vindexes().iter().any(|cv| cv.column == col));
                let first = found.next()?;
                found.next().is_none().then_some((first, col))
            }
            Expr::CompoundIdentifier(ids) if ids.len() >= 2 => {
                let col = ident(&ids[ids.len() - 1]);
                let qual = ident(&ids[ids.len() - 2]);
                for frame in self.frames.iter().rev() {
                    if let Some(b) = frame.iter().rev().find(|b| b.name == qual) {
                        return b.instance.map(|i| (i, col));
                    }
                }
                None
            }
            _ => None,
        }
    }

    fn apply_conditions(&mut self, conds: &[(Expr, bool)]) {
        for (expr, keys_ok) in conds {
            for c in conjuncts(expr) {
                self.condition(c, *keys_ok);
            }
            self.walk_expr(expr);
        }
    }

    fn condition(&mut self, c: &Expr, keys_ok: bool) {
        match c {
            Expr::BinaryOp { left, op: BinaryOperator::Eq, right } => {
                match (self.resolve(left), self.resolve(right)) {
                    (Some((a, ca)), Some((b, cb))) if self.colocated(a, &ca, b, &cb) => self.union(a, b),
                    (Some(_), Some(_)) => {}
                    (Some((i, col)), None) if keys_ok => self.key_pred(i, &col, std::slice::from_ref(right)),
                    (None, Some((i, col))) if keys_ok => self.key_pred(i, &col, std::slice::from_ref(left)),
                    _ => {}
                }
            }
            Expr::InList { expr, list, negated: false } if keys_ok && !list.is_empty() => {
                if let Some((i, col)) = self.resolve(expr) {
                    self.key_pred(i, &col, list);
                }
            }
            _ => {}
        }
    }

    fn key_pred(&mut self, instance: usize, column: &str, exprs: &[Expr]) {
        let table = self.instances[instance].table;
        // The cheapest vindex on the column the router can map with: a functional one, or a
        // lookup vindex whose table has a known place.
        let usable = table
            .vindexes_for_column(column)
            .into_iter()
            .filter_map(|cv| {
                if cv.vindex.needs_lookup() {
                    let place =
                        self.lookups.get(&(table.keyspace().to_owned(), cv.vindex.name().to_owned()))?;
                    Some((cv, Some(place.clone())))
                } else {
                    cv.vindex.as_single_column().map(|_| (cv, None))
                }
            })
            .min_by_key(|(cv, _)| cv.vindex.cost());
        let Some((cv, lookup_keyspace)) = usable else { return };
        let mut values = Vec::with_capacity(exprs.len());
        for e in exprs {
            match key_expr(e, cv.vindex.column_type()) {
                Ok(Some(v)) => {
                    if !values.contains(&v) {
                        values.push(v);
                    }
                }
                Ok(None) => return,
                Err(err) => {
                    if self.error.is_none() {
                        self.error = Some(key_error(table.name(), column, &err));
                    }
                    return;
                }
            }
        }
        let primary = table
            .primary_vindex()
            .is_some_and(|p| p.column == cv.column && Arc::ptr_eq(&p.vindex, &cv.vindex));
        self.keys.push(KeyPred {
            instance,
            column: format!("{}.{}", table.name(), column),
            vindex: cv.vindex.clone(),
            lookup_keyspace,
            primary,
            values,
        });
    }

    // ---- walking ----------------------------------------------------------------------------

    pub(crate) fn walk_query(&mut self, q: &Query, kind: BlockKind) {
        let names: Vec<String> =
            q.with.iter().flat_map(|w| w.cte_tables.iter().map(|c| ident(&c.alias.name))).collect();
        self.ctes.push(names);
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                self.walk_query(&cte.query, BlockKind::Cte);
            }
        }
        self.walk_setexpr(&q.body, kind);
        self.ctes.pop();
    }

    fn walk_setexpr(&mut self, s: &SetExpr, kind: BlockKind) {
        match s {
            SetExpr::Select(sel) => self.walk_select(sel, kind),
            SetExpr::Query(q) => self.walk_query(q, kind),
            SetExpr::SetOperation { left, right, .. } => {
                self.walk_setexpr(left, BlockKind::SetOp);
                self.walk_setexpr(right, BlockKind::SetOp);
            }
            SetExpr::Values(values) => {
                for row in &values.rows {
                    for e in &row.content {
                        self.walk_expr(e);
                    }
                }
            }
            SetExpr::Insert(stmt) | SetExpr::Update(stmt) | SetExpr::Delete(stmt) | SetExpr::Merge(stmt) => {
                self.nested_writes = true;
                match stmt {
                    Statement::Insert(i) => self.walk_insert(i, BlockKind::NestedWrite),
                    Statement::Update(u) => self.walk_update(u, BlockKind::NestedWrite),
                    Statement::Delete(d) => self.walk_delete(d, BlockKind::NestedWrite),
                    _ => self.opaque = true,
                }
            }
            SetExpr::Table(t) => {
                self.enter(kind);
                if let Some(name) = &t.table_name {
                    let mut parts = Vec::new();
                    if let Some(schema) = &t.schema_name {
                        parts.push(sqlparser::ast::Ident::new(schema.clone()));
                    }
                    parts.push(sqlparser::ast::Ident::new(name.clone()));
                    self.add_relation(&ObjectName::from(parts), None);
                }
                self.leave();
            }
        }
    }

    fn walk_select(&mut self, sel: &Select, kind: BlockKind) {
        self.enter(kind);
        if sel.into.is_some() {
            self.select_into = true;
        }
        let mut conds = Vec::new();
        for twj in &sel.from {
            self.bind_twj(twj, &mut conds, false);
        }
        if let Some(w) = &sel.selection {
            conds.push((w.clone(), true));
        }
        self.apply_conditions(&conds);
        for item in &sel.projection {
            if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item {
                self.walk_expr(e);
            }
        }
        if let GroupByExpr::Expressions(exprs, _) = &sel.group_by {
            for e in exprs {
                self.walk_expr(e);
            }
        }
        for e in sel.having.iter().chain(sel.qualify.iter()) {
            self.walk_expr(e);
        }
        if !sel.named_window.is_empty() {
            self.mark_window();
        }
        self.leave();
    }

    pub(crate) fn walk_top_query(&mut self, q: &Query) {
        self.walk_query(q, BlockKind::Top);
        // ORDER BY / LIMIT expressions of the top query may hold subqueries or windows.
        let top = self.top_block;
        if let Some(t) = top {
            self.current.push(t);
        }
        if let Some(ob) = &q.order_by {
            if let sqlparser::ast::OrderByKind::Expressions(list) = &ob.kind {
                for o in list {
                    self.walk_expr(&o.expr);
                }
            }
        }
        if top.is_some() {
            self.current.pop();
        }
    }

    /// UPDATE: the target and FROM relations form one block.
    pub(crate) fn walk_update(&mut self, u: &Update, kind: BlockKind) {
        self.enter(kind);
        let mut conds = Vec::new();
        self.bind_twj(&u.table, &mut conds, false);
        if let Some(UpdateTableFromKind::BeforeSet(f) | UpdateTableFromKind::AfterSet(f)) = &u.from {
            for twj in f {
                self.bind_twj(twj, &mut conds, false);
            }
        }
        if let Some(w) = &u.selection {
            conds.push((w.clone(), true));
        }
        self.apply_conditions(&conds);
        for a in &u.assignments {
            self.walk_expr(&a.value);
        }
        self.walk_items(u.returning.as_deref());
        self.leave();
    }

    /// DELETE: the target and USING relations form one block.
    pub(crate) fn walk_delete(&mut self, d: &Delete, kind: BlockKind) {
        self.enter(kind);
        let mut conds = Vec::new();
        let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &d.from;
        for twj in from.iter().chain(d.using.iter().flatten()) {
            self.bind_twj(twj, &mut conds, false);
        }
        if let Some(w) = &d.selection {
            conds.push((w.clone(), true));
        }
        self.apply_conditions(&conds);
        self.walk_items(d.returning.as_deref());
        self.leave();
    }

    /// INSERT: the target is the block's relation; VALUES/SELECT are walked as subqueries.
    pub(crate) fn walk_insert(&mut self, i: &Insert, kind: BlockKind) {
        self.enter(kind);
        if let TableObject::TableName(name) = &i.table {
            self.add_relation(name, None);
        } else {
            self.opaque = true;
        }
        if let Some(src) = &i.source {
            match src.body.as_ref() {
                SetExpr::Values(_) => self.walk_query(src, kind),
                _ => self.walk_query(src, BlockKind::Subquery),
            }
        }
        if let Some(sqlparser::ast::OnInsert::OnConflict(oc)) = &i.on {
            if let sqlparser::ast::OnConflictAction::DoUpdate(du) = &oc.action {
                for a in &du.assignments {
                    self.walk_expr(&a.value);
                }
                if let Some(w) = &du.selection {
                    self.walk_expr(w);
                }
            }
        }
        self.walk_items(i.returning.as_deref());
        self.leave();
    }

    fn walk_items(&mut self, items: Option<&[SelectItem]>) {
        for item in items.unwrap_or_default() {
            if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item {
                self.walk_expr(e);
            }
        }
    }

    fn mark_window(&mut self) {
        if let Some(&b) = self.current.last() {
            if !self.windows.contains(&b) {
                self.windows.push(b);
            }
        }
    }

    fn walk_function_arg(&mut self, arg: &FunctionArg) {
        let (FunctionArg::Named { arg, .. } | FunctionArg::ExprNamed { arg, .. } | FunctionArg::Unnamed(arg)) =
            arg;
        if let FunctionArgExpr::Expr(e) = arg {
            self.walk_expr(e);
        }
    }

    /// Find subqueries and window functions inside an expression.
    pub(crate) fn walk_expr(&mut self, e: &Expr) {
        match e {
            Expr::Subquery(q) | Expr::Exists { subquery: q, .. } => self.walk_query(q, BlockKind::Subquery),
            Expr::InSubquery { subquery, .. } => self.walk_query(subquery, BlockKind::Subquery),
            Expr::Function(f) => {
                if f.over.is_some() {
                    self.mark_window();
                }
                if let FunctionArguments::Subquery(q) = &f.args {
                    self.walk_query(q, BlockKind::Subquery);
                }
            }
            _ => {}
        }
        match expr_children(e) {
            Some(children) => {
                for x in children {
                    self.walk_expr(x);
                }
            }
            None => self.opaque |= looks_like_query(&e.to_string()),
        }
    }

    // ---- conclusions ------------------------------------------------------------------------

    /// The keyspace picture, with the default keyspace for unknown tables.
    pub(crate) fn class(&self, default_keyspace: Option<&str>) -> Result<Class, PlanError> {
        let mut class = Class::NoTables;
        for rel in &self.rels {
            let next = match rel {
                RelClass::Catalog => continue,
                RelClass::Reference(t) => Class::Reference(t.keyspace().to_owned()),
                RelClass::Sharded(t) => Class::Sharded(t.keyspace().to_owned()),
                RelClass::Unsharded(ks) => Class::Unsharded(ks.clone()),
                RelClass::Unknown(name) => match default_keyspace {
                    Some(ks) => Class::Unsharded(ks.to_owned()),
                    None => return Err(PlanError::UnknownTable { table: name.clone() }),
                },
            };
            class = merge_class(class, next)?;
        }
        Ok(class)
    }

    /// The target when every sharded instance is pinned to the same single value of the same
    /// unique vindex (the statement then runs on one shard whatever its shape).
    pub(crate) fn single_shard(&mut self, keyspace: &str) -> Option<Target> {
        let roots: Vec<usize> = (0..self.instances.len()).map(|i| self.find(i)).collect();
        let mut chosen: Option<&KeyPred> = None;
        let mut components: Vec<usize> = roots.clone();
        components.sort_unstable();
        components.dedup();
        for root in components {
            let best = self
                .keys
                .iter()
                .filter(|k| roots[k.instance] == root && k.single_unique().is_some())
                .min_by_key(|k| k.rank())?;
            match chosen {
                None => chosen = Some(best),
                Some(c) if c.vindex.name() == best.vindex.name() && c.values == best.values => {}
                Some(_) => return None,
            }
        }
        let k = chosen?;
        Some(Target::Keys { keyspace: keyspace.to_owned(), vindex: k.key_vindex(), values: k.values.clone() })
    }

    /// The first block other than the top one holding a sharded table.
    pub(crate) fn nested_sharded(&self) -> Option<BlockKind> {
        self.instances.iter().map(|i| self.blocks[i.block]).find(|&k| k != BlockKind::Top)
    }

    /// Every block's sharded instances must be co-located.
    pub(crate) fn check_joins(&mut self) -> Result<(), PlanError> {
        for block in 0..self.blocks.len() {
            let members: Vec<usize> =
                (0..self.instances.len()).filter(|&i| self.instances[i].block == block).collect();
            let Some(&first) = members.first() else { continue };
            let root = self.find(first);
            if let Some(&other) = members.iter().find(|&&m| self.find(m) != root) {
                return Err(PlanError::unsupported(format!(
                    "join between sharded tables that are not co-located on their sharding key ({}, {})",
                    self.instances[first].table.name(),
                    self.instances[other].table.name()
                )));
            }
        }
        Ok(())
    }

    /// The route of the top block (all its instances co-located): the best key predicate, or
    /// every shard. The bool says whether the target may resolve to several shards.
    pub(crate) fn top_target(&mut self, keyspace: &str) -> (Target, bool) {
        let top = self.top_block;
        let first = self.instances.iter().position(|i| Some(i.block) == top);
        let root = first.map(|f| self.find(f));
        let roots: Vec<usize> = (0..self.instances.len()).map(|i| self.find(i)).collect();
        let best = self.keys.iter().filter(|k| Some(roots[k.instance]) == root).min_by_key(|k| k.rank());
        match best {
            Some(k) => {
                let multi = k.single_unique().is_none();
                (
                    Target::Keys {
                        keyspace: keyspace.to_owned(),
                        vindex: k.key_vindex(),
                        values: k.values.clone(),
                    },
                    multi,
                )
            }
            None => (Target::All { keyspace: keyspace.to_owned() }, true),
        }
    }
}

fn merge_class(a: Class, b: Class) -> Result<Class, PlanError> {
    use Class::*;
    let mixed = |x: String, y: String| {
        let (x, y) = if x <= y { (x, y) } else { (y, x) };
        PlanError::unsupported(format!("a statement cannot use tables of keyspaces {x} and {y} together"))
    };
    Ok(match (a, b) {
        (NoTables, b) => b,
        (a, NoTables) => a,
        (Sharded(x), Sharded(y)) | (Sharded(x), Reference(y)) | (Reference(y), Sharded(x)) => {
            if x != y {
                return Err(mixed(x, y));
            }
            Sharded(x)
        }
        (Reference(x), Reference(y)) => {
            if x != y {
                return Err(mixed(x, y));
            }
            Reference(x)
        }
        (Unsharded(x), Unsharded(y)) => {
            if x != y {
                return Err(mixed(x, y));
            }
            Unsharded(x)
        }
        (Unsharded(x), Sharded(y) | Reference(y)) | (Sharded(y) | Reference(y), Unsharded(x)) => {
            return Err(PlanError::unsupported(format!(
                "a statement cannot use tables of the unsharded keyspace {x} together with tables of keyspace {y}"
            )))
        }
    })
}

fn alias_name(alias: &Option<sqlparser::ast::TableAlias>) -> Option<String> {
    alias.as_ref().map(|a| ident(&a.name))
}

fn is_inner(op: &JoinOperator) -> bool {
    matches!(op, JoinOperator::Join(_) | JoinOperator::Inner(_) | JoinOperator::CrossJoin(_))
}

fn has_outer(tf: &TableFactor) -> bool {
    match tf {
        TableFactor::NestedJoin { table_with_joins, .. } => {
            table_with_joins.joins.iter().any(|j| !is_inner(&j.join_operator))
                || has_outer(&table_with_joins.relation)
        }
        _ => false,
    }
}

fn join_constraint(op: &JoinOperator) -> Option<&JoinConstraint> {
    match op {
        JoinOperator::Join(c)
        | JoinOperator::Inner(c)
        | JoinOperator::Left(c)
        | JoinOperator::LeftOuter(c)
        | JoinOperator::Right(c)
        | JoinOperator::RightOuter(c)
        | JoinOperator::FullOuter(c)
        | JoinOperator::CrossJoin(c) => Some(c),
        _ => None,
    }
}
