//! [`Planner`]: the entry point. Text-level work happens here (routing hints, `SHOW ROUTE FOR`,
//! splitting several statements, the token-level fallback for what sqlparser rejects); one
//! parsed statement is planned in `statement.rs`.

use std::collections::HashMap;
use std::sync::Arc;

use vindex::{TableKind, ValidatedVSchema, Value};

use crate::cache::PlanCache;
use crate::error::PlanError;
use crate::parse::{self, Fallback};
use crate::plan::{Action, KeyExpr, Plan, Route, StatementClass, Target, TxControl};

/// Planner settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannerOptions {
    /// The unsharded keyspace that owns every table the VSchema does not name. `None`: such
    /// tables are an error (42P01), and unparsable statements go to any shard.
    pub default_keyspace: Option<String>,
    /// Plans kept in the cache (by exact statement text); 0 disables caching.
    pub cache_capacity: usize,
}

impl Default for PlannerOptions {
    fn default() -> Self {
        PlannerOptions { default_keyspace: None, cache_capacity: 4096 }
    }
}

/// Plans statements against one VSchema version. Shared by all sessions behind an `Arc`; the
/// router builds a new one when the VSchema changes, so cached plans never outlive it.
#[derive(Debug)]
pub struct Planner {
    vschema: Arc<ValidatedVSchema>,
    options: PlannerOptions,
    pub(crate) cache: PlanCache,
    /// Statement shapes (literals replaced by placeholders) → a template plan whose keys are
    /// those placeholders, or `None` when the shape's plan depends on more than its key values.
    shapes: PlanCache<Option<Arc<Plan>>>,
    pub(crate) lookups: LookupPlaces,
}

/// (keyspace, lookup vindex name) → the unsharded keyspace holding the vindex's lookup table.
pub(crate) type LookupPlaces = HashMap<(String, String), String>;

/// Where every lookup vindex's table lives: the keyspace the VSchema lists the table in (by
/// its name without schema, as in SQL), or the default keyspace when it lists it nowhere. That
/// keyspace must be unsharded: the router reads and writes the table on its one shard.
fn lookup_places(vs: &ValidatedVSchema, default_keyspace: Option<&str>) -> Result<LookupPlaces, PlanError> {
    let mut places = HashMap::new();
    for ks in vs.keyspaces() {
        for (name, vindex) in ks.vindexes() {
            let Some(lookup) = vindex.as_lookup() else { continue };
            let table = lookup.table().name();
            let bare = table.rsplit('.').next().unwrap_or(&table).to_owned();
            let place = match vs.table(&bare) {
                Some(t) if !t.is_sharded() && t.kind() == TableKind::Normal => t.keyspace().to_owned(),
                Some(t) => {
                    return Err(PlanError::Options {
                        reason: format!(
                            "the table {table} of lookup vindex {name} must be a plain table of an unsharded \
                             keyspace (it is in keyspace {})",
                            t.keyspace()
                        ),
                    })
                }
                None => match default_keyspace {
                    Some(d) => d.to_owned(),
                    None => {
                        return Err(PlanError::Options {
                            reason: format!(
                                "the table {table} of lookup vindex {name} is in no keyspace of the VSchema \
                                 and there is no default keyspace"
                            ),
                        })
                    }
                },
            };
            places.insert((ks.name().to_owned(), name.to_owned()), place);
        }
    }
    Ok(places)
}

impl Planner {
    /// A planner for `vschema`. The default keyspace, if any, must exist and be unsharded.
    pub fn new(vschema: Arc<ValidatedVSchema>, options: PlannerOptions) -> Result<Self, PlanError> {
        if let Some(ks) = &options.default_keyspace {
            match vschema.keyspace(ks) {
                None => {
                    return Err(PlanError::Options {
                        reason: format!("default keyspace {ks} is not in the VSchema"),
                    })
                }
                Some(info) if info.is_sharded() => {
                    return Err(PlanError::Options {
                        reason: format!("default keyspace {ks} must be unsharded"),
                    })
                }
                Some(_) => {}
            }
        }
        let lookups = lookup_places(&vschema, options.default_keyspace.as_deref())?;
        let cache = PlanCache::new(options.cache_capacity);
        let shapes = PlanCache::new(options.cache_capacity);
        Ok(Planner { vschema, options, cache, shapes, lookups })
    }

    /// The plan for a statement text (one or several statements), from the cache when the same
    /// text was planned before (errors are cached too). A cache hit does not parse.
    ///
    /// Texts that differ only in their literals (`... WHERE id = 1`, `... WHERE id = 2`, as the
    /// simple protocol sends them) share one parse: the text's shape, with each literal
    /// replaced by a placeholder, is planned once; when that plan runs on one shard picked by
    /// key values alone, each text gets a copy with its own literals as the keys (see
    /// [`Planner::plan_by_shape`]). Other shapes are planned by their exact text.
    pub fn plan(&self, sql: &str) -> Result<Arc<Plan>, PlanError> {
        // Both orders give the same plan; they differ in cost. A text with placeholders (the
        // extended protocol's) repeats exactly: look it up by text before lexing it for a
        // shape. A text with literals (the simple protocol's) rarely repeats: shape first.
        let parameterized = sql.as_bytes().contains(&b'$');
        if parameterized {
            if let Some(hit) = self.cache.get(sql) {
                return hit;
            }
        }
        if let Some(plan) = self.plan_by_shape(sql) {
            return Ok(plan);
        }
        if !parameterized {
            if let Some(hit) = self.cache.get(sql) {
                return hit;
            }
        }
        let result = self.plan_uncached(sql).map(Arc::new);
        self.cache.insert(sql, result.clone());
        result
    }

    /// The plan of `sql` from its shape's template, if the shape has a reusable one.
    ///
    /// Reusable means: the shape plans to `Route { scatter: None }` (one shard, or several
    /// only through a routing decision made at run time from key values), so the client's
    /// text is forwarded unchanged and only the key values can differ between texts of the
    /// same shape. A literal that is not a valid key value falls back to exact planning, which
    /// reports the error or scatters as it would have.
    fn plan_by_shape(&self, sql: &str) -> Option<Arc<Plan>> {
        let (shape, literals, base) = parse::shape(sql)?;
        let template = match self.shapes.get(&shape) {
            Some(t) => t?,
            None => {
                let planned = self.plan_uncached(&shape).ok().filter(reusable).map(Arc::new);
                self.shapes.insert(&shape, planned.clone());
                planned?
            }
        };
        instantiate(&template, &literals, base).map(Arc::new)
    }

    /// Plan without the cache.
    pub fn plan_uncached(&self, sql: &str) -> Result<Plan, PlanError> {
        if let Some(hint) = parse::routing_hint(sql)? {
            if let Some(ks) = &hint.keyspace {
                if self.vschema.keyspace(ks).is_none() {
                    return Err(PlanError::Syntax {
                        reason: format!("routing hint names unknown keyspace {ks}"),
                    });
                }
            }
            return Ok(Plan {
                class: StatementClass::Other,
                action: Action::Route(Route {
                    target: Target::Named { keyspace: hint.keyspace, shard: hint.shard },
                    scatter: None,
                }),
                params: parse::max_param(sql),
            });
        }
        if let Some(offset) = parse::show_route(sql) {
            let inner = &sql[offset..];
            if parse::split_statements(inner).is_empty() {
                return Err(PlanError::Syntax { reason: "SHOW ROUTE FOR needs a statement".into() });
            }
            let plan = self.plan_uncached(inner)?;
            let params = plan.params;
            return Ok(Plan {
                class: StatementClass::Other,
                action: Action::ShowRoute(Arc::new(plan)),
                params,
            });
        }
        let pieces = parse::split_statements(sql);
        match pieces.as_slice() {
            [] => Ok(Plan { class: StatementClass::Other, action: route(Target::Any), params: 0 }),
            [one] => self.plan_statement(&sql[one.clone()]),
            many => {
                let plans = many
                    .iter()
                    .map(|r| self.plan_statement(&sql[r.clone()]).map(Arc::new))
                    .collect::<Result<Vec<_>, _>>()?;
                let class = plans
                    .iter()
                    .map(|p| p.class)
                    .try_fold(None, |acc: Option<StatementClass>, c| match acc {
                        None => Some(Some(c)),
                        Some(a) if a == c => Some(Some(a)),
                        Some(_) => None,
                    })
                    .flatten()
                    .unwrap_or(StatementClass::Other);
                let params = plans.iter().map(|p| p.params).max().unwrap_or(0);
                Ok(Plan { class, action: Action::Multi(plans), params })
            }
        }
    }

    /// The VSchema this planner plans against.
    #[must_use]
    pub fn vschema(&self) -> &ValidatedVSchema {
        &self.vschema
    }

    /// The options it was built with.
    #[must_use]
    pub fn options(&self) -> &PlannerOptions {
        &self.options
    }

    pub(crate) fn default_keyspace(&self) -> Option<&str> {
        self.options.default_keyspace.as_deref()
    }

    /// Where statements without sharded tables and unknown to the planner go.
    pub(crate) fn default_target(&self) -> Target {
        match self.default_keyspace() {
            Some(ks) => Target::Unsharded { keyspace: ks.to_owned() },
            None => Target::Any,
        }
    }

    fn plan_statement(&self, text: &str) -> Result<Plan, PlanError> {
        let params = parse::max_param(text);
        match parse::parse_one(text) {
            Ok(stmt) => {
                let (class, action) = self.plan_parsed(&stmt, text)?;
                Ok(Plan { class, action, params })
            }
            Err(e) if parse::is_recursion_error(&e) => Err(PlanError::TooComplex),
            Err(e) => {
                let (class, action) = self.fallback(text, &e.to_string())?;
                Ok(Plan { class, action, params })
            }
        }
    }

    /// A statement sqlparser rejected: recognize two-phase and transaction commands, refuse it
    /// if it names a sharded or reference table, else let the default keyspace (or any shard)
    /// run it, so PostgreSQL reports genuine syntax errors in its own words.
    fn fallback(&self, text: &str, parser_error: &str) -> Result<(StatementClass, Action), PlanError> {
        match parse::fallback(text) {
            Fallback::TwoPhase => Ok((StatementClass::Transaction, Action::Transaction(TxControl::TwoPhase))),
            Fallback::Begin => Ok((StatementClass::Transaction, Action::Transaction(TxControl::Begin))),
            Fallback::Rollback => Ok((StatementClass::Transaction, Action::Transaction(TxControl::Rollback))),
            Fallback::Other { identifiers } => {
                if let Some(what) = self.names_distributed_table(&identifiers) {
                    return Err(PlanError::unsupported(format!(
                        "could not parse this statement ({parser_error}) and it names the {what}"
                    )));
                }
                Ok((StatementClass::Other, route(self.default_target())))
            }
        }
    }

    /// "sharded table x" / "reference table x" if one of the identifiers is such a table.
    pub(crate) fn names_distributed_table(&self, identifiers: &[String]) -> Option<String> {
        identifiers.iter().find_map(|id| {
            let t = self.vschema.table(id)?;
            if t.is_sharded() {
                Some(format!("sharded table {}", t.name()))
            } else if t.kind() == TableKind::Reference {
                Some(format!("reference table {}", t.name()))
            } else {
                None
            }
        })
    }
}

/// See [`Planner::plan_by_shape`].
fn reusable(plan: &Plan) -> bool {
    matches!(&plan.action, Action::Route(Route { scatter: None, target: Target::Keys { .. } }))
}

/// The template with shape placeholder `$(base + k + 1)` replaced by literal `k`.
fn instantiate(template: &Plan, literals: &[&str], base: usize) -> Option<Plan> {
    let Action::Route(Route { target: Target::Keys { keyspace, vindex, values }, scatter: None }) =
        &template.action
    else {
        return None;
    };
    let column_type = vindex.vindex.column_type();
    let mut keys = Vec::with_capacity(values.len());
    for v in values {
        keys.push(match v {
            KeyExpr::Param(n) if *n > base => {
                let text = literals.get(n - base - 1)?;
                KeyExpr::Literal(Value::from_sql_literal(text, column_type).ok()?)
            }
            other => other.clone(),
        });
    }
    Some(Plan {
        class: template.class,
        action: Action::Route(Route {
            target: Target::Keys { keyspace: keyspace.clone(), vindex: vindex.clone(), values: keys },
            scatter: None,
        }),
        params: base,
    })
}

pub(crate) fn route(target: Target) -> Action {
    Action::Route(Route { target, scatter: None })
}
