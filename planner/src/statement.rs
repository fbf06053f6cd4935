//! Planning one parsed statement: SELECT, INSERT, UPDATE, DELETE, DDL, COPY, EXPLAIN,
//! transaction and session statements.

use sqlparser::ast::{
    CommentObject, Expr, Insert, ObjectName, ObjectType, OnConflictAction, OnInsert, Query, SetExpr,
    Statement, TableObject, Update,
};
use vindex::{TableInfo, TableKind};

use crate::analyze::{self, Analysis, BlockKind, Class, RelClass};
use crate::copy::CopyStatement;
use crate::error::PlanError;
use crate::parse;
use crate::plan::{
    Action, AutoFill, Broadcast, InsertSplit, InsertTemplate, KeyExpr, KeyVindex, LookupWrite, PassThrough,
    Route, Scatter, StatementClass, Target, TxControl,
};
use crate::planner::{route, Planner};
use crate::rewrite;

type Planned = Result<(StatementClass, Action), PlanError>;

fn savepoint_name(id: &sqlparser::ast::Ident) -> String {
    analyze::ident(id)
}

/// The scatter of a write: the client's statement on every shard, rows concatenated.
fn write_scatter(text: &str) -> Scatter {
    Scatter {
        sql: text.trim().to_owned(),
        columns: Vec::new(),
        visible: 0,
        shard_order: Vec::new(),
        group: None,
        having: None,
        final_order: None,
        offset: 0,
        limit: None,
        write: true,
        passthrough: Some(PassThrough { helpers: 0 }),
    }
}

fn broadcast(keyspaces: Vec<String>, write: bool) -> Action {
    let mut keyspaces = keyspaces;
    keyspaces.sort();
    keyspaces.dedup();
    Action::Broadcast(Broadcast { keyspaces, write })
}

impl Planner {
    pub(crate) fn plan_parsed(&self, stmt: &Statement, text: &str) -> Planned {
        use StatementClass as C;
        let tx = |t| Ok((C::Transaction, Action::Transaction(t)));
        match stmt {
            Statement::Query(q) => Ok((C::Select, self.plan_query(q)?)),
            Statement::Insert(i) => Ok((C::Insert, self.plan_insert(i, stmt)?)),
            Statement::Update(u) => Ok((C::Update, self.plan_update(u, text)?)),
            Statement::Delete(d) => {
                let mut a = Analysis::new(self.vschema(), &self.lookups);
                a.walk_delete(d, BlockKind::Top);
                Ok((C::Delete, self.plan_write(a, &[], text, "DELETE")?))
            }
            Statement::StartTransaction { .. } => tx(TxControl::Begin),
            Statement::Commit { .. } => tx(TxControl::Commit),
            Statement::Rollback { savepoint: Some(name), .. } => {
                tx(TxControl::RollbackTo(savepoint_name(name)))
            }
            Statement::Rollback { .. } => tx(TxControl::Rollback),
            Statement::Savepoint { name } => tx(TxControl::Savepoint(savepoint_name(name))),
            Statement::ReleaseSavepoint { name } => tx(TxControl::Release(savepoint_name(name))),
            Statement::Set(_)
            | Statement::Reset(_)
            | Statement::ShowVariable { .. }
            | Statement::ShowVariables { .. }
            | Statement::Discard { .. }
            | Statement::LISTEN { .. }
            | Statement::UNLISTEN { .. }
            | Statement::NOTIFY { .. }
            | Statement::Deallocate { .. }
            | Statement::Prepare { .. }
            | Statement::Execute { .. } => Ok((C::Session, Action::Session)),
            Statement::Explain { statement, analyze, .. } => self.plan_explain(statement, *analyze, text),
            Statement::Copy { source, to, target, options, legacy_options, .. } => {
                self.plan_copy(&CopyStatement { source, to: *to, target, options, legacy: legacy_options })
            }
            _ => self.plan_ddl(stmt, text),
        }
    }

    /// SELECT (and any query).
    pub(crate) fn plan_query(&self, q: &Query) -> Result<Action, PlanError> {
        let mut a = Analysis::new(self.vschema(), &self.lookups);
        a.walk_top_query(q);
        check_analysis(&mut a)?;
        match a.class(self.default_keyspace())? {
            Class::NoTables => Ok(route(Target::Any)),
            Class::Reference(keyspace) => {
                if a.nested_writes || a.select_into {
                    return Err(PlanError::unsupported(
                        "writing a reference table inside a query (data-modifying WITH or SELECT INTO) is not supported",
                    ));
                }
                Ok(route(Target::AnyOf { keyspace }))
            }
            Class::Unsharded(keyspace) => Ok(route(Target::Unsharded { keyspace })),
            Class::Sharded(keyspace) => {
                if let Some(target) = a.single_shard(&keyspace) {
                    return Ok(route(target));
                }
                if a.select_into {
                    return Err(PlanError::unsupported("SELECT INTO from sharded tables across shards"));
                }
                a.check_joins()?;
                if let Some(kind) = a.nested_sharded() {
                    return Err(PlanError::unsupported(kind.across_shards()));
                }
                if a.top_block.is_some_and(|t| a.windows.contains(&t)) {
                    return Err(PlanError::unsupported("window functions across shards"));
                }
                let (target, multi) = a.top_target(&keyspace);
                if !multi {
                    return Ok(route(target));
                }
                let scatter = rewrite::scatter_select(q)?;
                Ok(Action::Route(Route { target, scatter: Some(scatter) }))
            }
        }
    }

    fn plan_update(&self, u: &Update, text: &str) -> Result<Action, PlanError> {
        let mut a = Analysis::new(self.vschema(), &self.lookups);
        a.walk_update(u, BlockKind::Top);
        let mut columns = Vec::new();
        for asg in &u.assignments {
            match &asg.target {
                sqlparser::ast::AssignmentTarget::ColumnName(n) => columns.push(n.clone()),
                sqlparser::ast::AssignmentTarget::Tuple(ns) => columns.extend(ns.iter().cloned()),
            }
        }
        self.plan_write(a, &columns, text, "UPDATE")
    }

    /// UPDATE / DELETE: the target is the first relation of the top block.
    fn plan_write(
        &self,
        mut a: Analysis<'_>,
        set_columns: &[ObjectName],
        text: &str,
        verb: &str,
    ) -> Result<Action, PlanError> {
        check_analysis(&mut a)?;
        let target_class = a.rels.first().cloned();
        match a.class(self.default_keyspace())? {
            Class::NoTables => Ok(route(Target::Any)),
            Class::Reference(keyspace) => Ok(broadcast(vec![keyspace], true)),
            Class::Unsharded(keyspace) => Ok(route(Target::Unsharded { keyspace })),
            Class::Sharded(keyspace) => {
                let table = match target_class {
                    Some(RelClass::Sharded(t)) => t,
                    Some(RelClass::Reference(_)) => {
                        return Err(PlanError::unsupported(format!(
                            "{verb} of a reference table using sharded tables is not supported"
                        )))
                    }
                    _ => {
                        return Err(PlanError::unsupported(format!("{verb} of this table is not supported")))
                    }
                };
                check_key_columns(table, set_columns)?;
                if let Some(target) = a.single_shard(&keyspace) {
                    return Ok(route(target));
                }
                a.check_joins()?;
                if let Some(kind) = a.nested_sharded() {
                    return Err(PlanError::unsupported(kind.across_shards()));
                }
                let (target, multi) = a.top_target(&keyspace);
                let scatter = multi.then(|| write_scatter(text));
                Ok(Action::Route(Route { target, scatter }))
            }
        }
    }

    fn plan_insert(&self, ins: &Insert, stmt: &Statement) -> Result<Action, PlanError> {
        let TableObject::TableName(name) = &ins.table else {
            return Err(PlanError::unsupported("INSERT into a table function"));
        };
        let mut a = Analysis::new(self.vschema(), &self.lookups);
        a.walk_insert(ins, BlockKind::Top);
        check_analysis(&mut a)?;
        let class = a.class(self.default_keyspace())?;
        match analyze::classify_name(self.vschema(), name) {
            RelClass::Catalog => Ok(route(Target::Any)),
            RelClass::Reference(t) => match class {
                Class::Sharded(_) => {
                    Err(PlanError::unsupported("INSERT into a reference table from sharded tables"))
                }
                _ => Ok(broadcast(vec![t.keyspace().to_owned()], true)),
            },
            RelClass::Sharded(t) => self.plan_sharded_insert(t, ins, stmt, &a),
            RelClass::Unsharded(_) | RelClass::Unknown(_) => match class {
                Class::Unsharded(keyspace) => Ok(route(Target::Unsharded { keyspace })),
                _ => Ok(route(self.default_target())),
            },
        }
    }

    fn plan_sharded_insert(
        &self,
        t: &TableInfo,
        ins: &Insert,
        stmt: &Statement,
        a: &Analysis<'_>,
    ) -> Result<Action, PlanError> {
        let name = t.name();
        let rows = match ins.source.as_ref().map(|q| q.body.as_ref()) {
            Some(SetExpr::Values(v)) => &v.rows,
            Some(_) => {
                return Err(PlanError::unsupported(format!(
                    "INSERT ... SELECT into the sharded table {name} is not supported"
                )))
            }
            None => return Err(PlanError::unsupported("INSERT into a sharded table needs a column list")),
        };
        if a.instances.len() > 1 {
            return Err(PlanError::unsupported(format!(
                "INSERT into the sharded table {name} with a subquery on a sharded table"
            )));
        }
        if ins.columns.is_empty() {
            return Err(PlanError::unsupported("INSERT into a sharded table needs a column list"));
        }
        let primary = t
            .primary_vindex()
            .ok_or_else(|| PlanError::unsupported("sharded table without a primary vindex"))?;
        let col = &primary.column;
        let has = |c: &str| {
            ins.columns.iter().any(|x| analyze::name_parts(x).last().map(|p| p.as_str()) == Some(c))
        };
        let auto_increment = t.auto_increment().filter(|a| !has(&a.column)).map(|a| AutoFill {
            column: a.column.clone(),
            sequence_keyspace: a.sequence_keyspace.clone(),
            sequence: a.sequence_table.clone(),
            is_key: a.column == *col,
        });
        let generated_key = auto_increment.as_ref().is_some_and(|a| a.is_key);
        let idx = ins.columns.iter().position(|c| analyze::name_parts(c).last() == Some(col));
        if idx.is_none() && !generated_key {
            return Err(PlanError::unsupported(format!(
                "INSERT into {name} needs the sharding key column {name}.{col} in its column list"
            )));
        }
        if let Some(OnInsert::OnConflict(oc)) = &ins.on {
            if let OnConflictAction::DoUpdate(du) = &oc.action {
                let cols: Vec<ObjectName> = du
                    .assignments
                    .iter()
                    .flat_map(|asg| match &asg.target {
                        sqlparser::ast::AssignmentTarget::ColumnName(n) => vec![n.clone()],
                        sqlparser::ast::AssignmentTarget::Tuple(ns) => ns.clone(),
                    })
                    .collect();
                check_key_columns(t, &cols)?;
            }
        }
        let sc = primary.vindex.as_single_column();
        let mut keys = Vec::with_capacity(rows.len());
        for row in rows.iter().filter(|_| !generated_key) {
            let expr: Option<&Expr> = idx.and_then(|i| row.content.get(i));
            let key = match expr.map(|e| analyze::key_expr(e, primary.vindex.column_type())) {
                Some(Ok(Some(k))) => k,
                Some(Err(err)) => return Err(analyze::key_error(name, col, &err)),
                _ => {
                    return Err(PlanError::unsupported(format!(
                        "INSERT into a sharded table needs the sharding key {name}.{col} as a literal or $n in every row"
                    )))
                }
            };
            if let (KeyExpr::Literal(v), Some(sc)) = (&key, sc) {
                if let Err(err) = sc.map_for_insert(v) {
                    return Err(analyze::key_error(name, col, &err.at_column(name, col)));
                }
            }
            keys.push(key);
        }
        let keyspace = t.keyspace().to_owned();
        let vindex = KeyVindex::functional(format!("{name}.{col}"), primary.vindex.clone());
        let lookups = self.lookup_writes(t, ins, rows)?;
        if keys.len() == 1 && auto_increment.is_none() && lookups.is_empty() {
            return Ok(route(Target::Keys { keyspace, vindex, values: keys }));
        }
        Ok(Action::InsertSplit(InsertSplit {
            keyspace,
            table: name.to_owned(),
            vindex,
            keys,
            returning: ins.returning.is_some(),
            template: InsertTemplate::new(stmt.clone()),
            auto_increment,
            lookups,
        }))
    }

    /// The lookup rows an INSERT into `t` adds, for each lookup vindex `t` owns. The indexed
    /// column must be a literal or `$n` in every row (or absent: NULL, no lookup row).
    fn lookup_writes(
        &self,
        t: &TableInfo,
        ins: &Insert,
        rows: &[sqlparser::ast::Parens<Vec<Expr>>],
    ) -> Result<Vec<LookupWrite>, PlanError> {
        let name = t.name();
        let mut out = Vec::new();
        for cv in t.column_vindexes() {
            let Some(place) = self.lookups.get(&(t.keyspace().to_owned(), cv.vindex.name().to_owned()))
            else {
                continue;
            };
            if !self.owns_lookup(t, cv.vindex.name()) {
                continue;
            }
            let col = &cv.column;
            let idx = ins.columns.iter().position(|c| analyze::name_parts(c).last() == Some(col));
            let mut values = Vec::with_capacity(rows.len());
            for row in rows {
                let value = match idx.and_then(|i| row.content.get(i)) {
                    None => KeyExpr::Literal(vindex::Value::Null),
                    Some(e) => match analyze::key_expr(e, cv.vindex.column_type()) {
                        Ok(Some(k)) => k,
                        Err(err) => return Err(analyze::key_error(name, col, &err)),
                        Ok(None) => {
                            return Err(PlanError::unsupported(format!(
                                "INSERT into {name} needs {name}.{col} (lookup vindex {}) as a literal, $n or NULL in every row",
                                cv.vindex.name()
                            )))
                        }
                    },
                };
                values.push(value);
            }
            if values.iter().all(|v| matches!(v, KeyExpr::Literal(vindex::Value::Null))) {
                continue;
            }
            out.push(LookupWrite {
                vindex: KeyVindex {
                    column: format!("{name}.{col}").into(),
                    vindex: cv.vindex.clone(),
                    lookup_keyspace: Some(place.as_str().into()),
                },
                owner: name.to_owned(),
                column: col.clone(),
                values,
            });
        }
        Ok(out)
    }

    fn plan_explain(&self, inner: &Statement, analyze: bool, text: &str) -> Planned {
        let (class, action) = self.plan_parsed(inner, text)?;
        match action {
            Action::Route(Route { scatter: None, .. }) => {
                Ok((if analyze { class } else { StatementClass::Other }, action))
            }
            _ => Err(PlanError::unsupported(
                "EXPLAIN of a statement that runs on several shards is not supported; use SHOW ROUTE FOR <statement> to see its plan",
            )),
        }
    }

    /// Keyspaces of the named tables: their own, the default keyspace for unknown names, every
    /// keyspace when no name is known (or there is no default).
    fn keyspaces_of(&self, names: &[&ObjectName]) -> Vec<String> {
        let mut out = Vec::new();
        for name in names {
            match analyze::classify_name(self.vschema(), name) {
                RelClass::Catalog => {}
                RelClass::Reference(t) | RelClass::Sharded(t) => out.push(t.keyspace().to_owned()),
                RelClass::Unsharded(ks) => out.push(ks),
                RelClass::Unknown(_) => out.extend(self.default_keyspace().map(str::to_owned)),
            }
        }
        if out.is_empty() {
            out = self.all_keyspaces();
        }
        out
    }

    fn all_keyspaces(&self) -> Vec<String> {
        self.vschema().keyspaces().map(|k| k.name().to_owned()).collect()
    }

    /// The keyspace a query in DDL (CREATE VIEW, CREATE TABLE AS) reads, if it reads tables.
    fn ddl_query_keyspace(
        &self,
        q: &Query,
        what: &str,
        allow_sharded: bool,
    ) -> Result<Option<String>, PlanError> {
        let mut a = Analysis::new(self.vschema(), &self.lookups);
        a.walk_top_query(q);
        check_analysis(&mut a)?;
        Ok(match a.class(self.default_keyspace())? {
            Class::NoTables => None,
            Class::Sharded(_) if !allow_sharded => {
                return Err(PlanError::unsupported(format!("{what} from a sharded table is not supported")))
            }
            Class::Sharded(ks) | Class::Reference(ks) | Class::Unsharded(ks) => Some(ks),
        })
    }

    fn plan_ddl(&self, stmt: &Statement, text: &str) -> Planned {
        let ddl = |keyspaces: Vec<String>| Ok((StatementClass::Ddl, broadcast(keyspaces, false)));
        let with_query = |name: &ObjectName, q: Option<&Query>, what: &str, sharded_ok: bool| -> Planned {
            let from_query = match q {
                Some(q) => self.ddl_query_keyspace(q, what, sharded_ok)?,
                None => None,
            };
            let named = analyze::classify_name(self.vschema(), name);
            let keyspaces = match (named, from_query) {
                (RelClass::Unknown(_), Some(ks)) => vec![ks],
                (_, Some(ks)) => {
                    let own = self.keyspaces_of(&[name]);
                    if own != [ks.clone()] {
                        return Err(PlanError::unsupported(format!("{what} across keyspaces")));
                    }
                    own
                }
                (_, None) => self.keyspaces_of(&[name]),
            };
            ddl(keyspaces)
        };
        match stmt {
            Statement::CreateTable(ct) => {
                with_query(&ct.name, ct.query.as_deref(), "CREATE TABLE ... AS", false)
            }
            Statement::CreateView(cv) => with_query(&cv.name, Some(&cv.query), "CREATE VIEW", true),
            Statement::AlterView { name, query, .. } => with_query(name, Some(query), "ALTER VIEW", true),
            Statement::CreateIndex(ci) => ddl(self.keyspaces_of(&[&ci.table_name])),
            Statement::AlterTable(at) => ddl(self.keyspaces_of(&[&at.name])),
            Statement::CreateTrigger(ct) => ddl(self.keyspaces_of(&[&ct.table_name])),
            Statement::Drop {
                object_type: ObjectType::Table | ObjectType::View | ObjectType::MaterializedView,
                names,
                ..
            } => ddl(self.keyspaces_of(&names.iter().collect::<Vec<_>>())),
            Statement::Comment { object_type: CommentObject::Table, object_name, .. } => {
                ddl(self.keyspaces_of(&[object_name]))
            }
            Statement::Comment { object_type: CommentObject::Column, object_name, .. } => {
                let mut parts = object_name.0.clone();
                parts.pop();
                ddl(self.keyspaces_of(&[&ObjectName(parts)]))
            }
            Statement::Truncate(t) => {
                let names: Vec<&ObjectName> = t.table_names.iter().map(|n| &n.name).collect();
                let classes: Vec<RelClass<'_>> =
                    names.iter().map(|n| analyze::classify_name(self.vschema(), n)).collect();
                let all_reference = classes.iter().all(|c| matches!(c, RelClass::Reference(_)));
                let mixed_unsharded =
                    classes.iter().any(|c| matches!(c, RelClass::Unknown(_) | RelClass::Unsharded(_)))
                        && classes.iter().any(|c| matches!(c, RelClass::Sharded(_) | RelClass::Reference(_)));
                if mixed_unsharded {
                    return Err(PlanError::unsupported("TRUNCATE of unsharded and sharded tables together"));
                }
                let keyspaces = self.keyspaces_of(&names);
                Ok((StatementClass::Ddl, broadcast(keyspaces, all_reference)))
            }
            Statement::CreateFunction(_)
            | Statement::CreateExtension(_)
            | Statement::CreateSchema { .. }
            | Statement::CreateType { .. }
            | Statement::CreateSequence { .. }
            | Statement::CreateDomain(_)
            | Statement::CreateRole(_)
            | Statement::CreateProcedure { .. }
            | Statement::CreateCollation(_)
            | Statement::DropFunction(_)
            | Statement::DropExtension(_)
            | Statement::DropDomain(_)
            | Statement::DropProcedure { .. }
            | Statement::DropTrigger(_)
            | Statement::Drop { .. }
            | Statement::AlterIndex { .. }
            | Statement::AlterSchema(_)
            | Statement::AlterType(_)
            | Statement::AlterFunction(_)
            | Statement::AlterRole { .. }
            | Statement::Comment { .. }
            | Statement::Grant(_)
            | Statement::Revoke(_) => ddl(self.all_keyspaces()),
            _ => self.plan_other(text),
        }
    }

    /// A statement the planner does not model: refused when it names a sharded or reference
    /// table, else run where unknown statements go.
    fn plan_other(&self, text: &str) -> Planned {
        let identifiers: Vec<String> = parse::significant(text)
            .into_iter()
            .filter_map(|t| match t.kind {
                parse::TokenKind::Word(w) | parse::TokenKind::QuotedIdent(w) => Some(w),
                _ => None,
            })
            .collect();
        if let Some(what) = self.names_distributed_table(&identifiers) {
            let verb = identifiers.first().map(|w| w.to_uppercase()).unwrap_or_default();
            return Err(PlanError::unsupported(format!("{verb} statements on the {what} are not supported")));
        }
        Ok((StatementClass::Other, route(self.default_target())))
    }
}

/// Errors found while walking, and expressions the walk could not look into.
fn check_analysis(a: &mut Analysis<'_>) -> Result<(), PlanError> {
    if let Some(e) = a.error.take() {
        return Err(e);
    }
    if a.opaque {
        return Err(PlanError::unsupported("cannot analyze a subquery inside this kind of expression"));
    }
    Ok(())
}

/// Refuse changing a column that has a column vindex.
fn check_key_columns(table: &TableInfo, columns: &[ObjectName]) -> Result<(), PlanError> {
    if table.kind() != TableKind::Normal {
        return Ok(());
    }
    for c in columns {
        if let Some(col) = analyze::name_parts(c).last() {
            if table.column_vindexes().iter().any(|cv| &cv.column == col) {
                return Err(PlanError::unsupported(format!(
                    "changing a sharding key column ({}.{col}) is not supported; delete and re-insert the row",
                    table.name()
                )));
            }
        }
    }
    Ok(())
}
