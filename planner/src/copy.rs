//! COPY: which shard(s) a COPY runs on, and how `COPY <sharded table> FROM STDIN` is split.

use sqlparser::ast::{CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Ident};
use vindex::TableInfo;

use crate::analyze::{self, RelClass};
use crate::error::PlanError;
use crate::plan::{Action, CopyFormat, CopyIn, CopyKind, KeyVindex, Route, StatementClass, Target};
use crate::planner::{route, Planner};

/// The parts of a parsed COPY the planner looks at.
pub(crate) struct CopyStatement<'a> {
    pub source: &'a CopySource,
    pub to: bool,
    pub target: &'a CopyTarget,
    pub options: &'a [CopyOption],
    pub legacy: &'a [CopyLegacyOption],
}

impl Planner {
    pub(crate) fn plan_copy(&self, c: &CopyStatement<'_>) -> Result<(StatementClass, Action), PlanError> {
        let other = |a: Action| Ok((StatementClass::Other, a));
        match c.source {
            CopySource::Query(q) => match self.plan_query(q)? {
                a @ Action::Route(Route { scatter: None, .. }) => other(a),
                _ => Err(PlanError::unsupported("COPY (query) TO across shards is not supported yet")),
            },
            CopySource::Table { table_name, columns } => match analyze::classify_name(self.vschema(), table_name) {
                RelClass::Catalog => other(route(Target::Any)),
                RelClass::Unsharded(keyspace) => other(route(Target::Unsharded { keyspace })),
                RelClass::Unknown(table) => match self.default_keyspace() {
                    Some(ks) => other(route(Target::Unsharded { keyspace: ks.to_owned() })),
                    None => Err(PlanError::UnknownTable { table }),
                },
                RelClass::Reference(t) if c.to => other(route(Target::AnyOf { keyspace: t.keyspace().to_owned() })),
                RelClass::Reference(_) => {
                    Err(PlanError::unsupported("COPY into a reference table is not supported yet"))
                }
                RelClass::Sharded(_) if c.to => Err(PlanError::unsupported(
                    "COPY from a sharded table is not supported yet; use COPY (SELECT ... WHERE <sharding key> = ...) TO STDOUT",
                )),
                RelClass::Sharded(t) => {
                    let copy = self.plan_copy_in(t, &table_name.to_string(), columns, c)?;
                    Ok((StatementClass::Insert, Action::CopyIn(copy)))
                }
            },
        }
    }

    fn plan_copy_in(
        &self,
        t: &TableInfo,
        written: &str,
        columns: &[Ident],
        c: &CopyStatement<'_>,
    ) -> Result<CopyIn, PlanError> {
        let name = t.name();
        if !matches!(c.target, CopyTarget::Stdin) {
            return Err(PlanError::unsupported(format!(
                "COPY into the sharded table {name} from a server file or program is not supported; use COPY ... FROM STDIN (psql's \\copy)"
            )));
        }
        let primary = t
            .primary_vindex()
            .ok_or_else(|| PlanError::unsupported("sharded table without a primary vindex"))?;
        if primary.vindex.as_single_column().is_none() {
            return Err(PlanError::unsupported(format!(
                "COPY into {name}: its primary vindex {} cannot place new rows",
                primary.vindex.name()
            )));
        }
        let owned_lookup = t.column_vindexes().iter().find(|cv| {
            self.lookups.contains_key(&(t.keyspace().to_owned(), cv.vindex.name().to_owned()))
                && self.owns_lookup(t, cv.vindex.name())
        });
        if let Some(v) = owned_lookup {
            return Err(PlanError::unsupported(format!(
                "COPY into {name}, which owns the lookup vindex {}, is not supported (COPY would not add its lookup rows); use INSERT",
                v.vindex.name()
            )));
        }
        let col = &primary.column;
        let names: Vec<String> = columns.iter().map(analyze::ident).collect();
        if let Some(a) = t.auto_increment() {
            if !names.is_empty() && !names.contains(&a.column) {
                return Err(PlanError::unsupported(format!(
                    "COPY into {name} without its auto_increment column {} is not supported; use INSERT",
                    a.column
                )));
            }
        }
        let position = if names.is_empty() {
            None
        } else {
            Some(names.iter().position(|n| n == col).ok_or_else(|| {
                PlanError::unsupported(format!(
                    "COPY into {name} needs the sharding key column {col} in its column list"
                ))
            })?)
        };
        Ok(CopyIn {
            keyspace: t.keyspace().to_owned(),
            table: written.to_owned(),
            vindex: KeyVindex::functional(format!("{name}.{col}"), primary.vindex.clone()),
            column: col.clone(),
            position,
            format: copy_format(c.options, c.legacy)?,
        })
    }

    /// Whether the VSchema names `t` as the owner of lookup vindex `vindex`.
    pub(crate) fn owns_lookup(&self, t: &TableInfo, vindex: &str) -> bool {
        self.vschema()
            .doc()
            .keyspaces
            .get(t.keyspace())
            .and_then(|k| k.vindexes.get(vindex))
            .and_then(|v| v.owner.as_deref())
            == Some(t.name())
    }
}

fn one_byte(c: char, what: &str) -> Result<u8, PlanError> {
    u8::try_from(c).ok().filter(u8::is_ascii).ok_or_else(|| {
        PlanError::unsupported(format!("COPY {what} must be a single ASCII character through pg-router"))
    })
}

/// The COPY options that shape the data, with PostgreSQL's defaults.
fn copy_format(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> Result<CopyFormat, PlanError> {
    let mut kind = CopyKind::Text;
    let (mut delimiter, mut null, mut quote, mut escape) = (None, None, None, None);
    let mut header = false;
    for o in options {
        match o {
            CopyOption::Format(f) => {
                kind = match f.value.to_ascii_lowercase().as_str() {
                    "text" => CopyKind::Text,
                    "csv" => CopyKind::Csv,
                    "binary" => CopyKind::Binary,
                    other => return Err(PlanError::unsupported(format!("COPY format \"{other}\""))),
                }
            }
            CopyOption::Delimiter(c) => delimiter = Some(one_byte(*c, "DELIMITER")?),
            CopyOption::Null(s) => null = Some(s.as_bytes().to_vec()),
            CopyOption::Header(h) => header = *h,
            CopyOption::Quote(c) => quote = Some(one_byte(*c, "QUOTE")?),
            CopyOption::Escape(c) => escape = Some(one_byte(*c, "ESCAPE")?),
            CopyOption::Encoding(e) if matches!(e.to_ascii_uppercase().as_str(), "UTF8" | "UTF-8") => {}
            CopyOption::Encoding(_) => {
                return Err(PlanError::unsupported(
                    "COPY with an ENCODING other than UTF8 into a sharded table is not supported",
                ))
            }
            CopyOption::Freeze(_)
            | CopyOption::ForceQuote(_)
            | CopyOption::ForceNotNull(_)
            | CopyOption::ForceNull(_) => {}
        }
    }
    for o in legacy {
        match o {
            CopyLegacyOption::Binary => kind = CopyKind::Binary,
            CopyLegacyOption::Delimiter(c) => delimiter = Some(one_byte(*c, "DELIMITER")?),
            CopyLegacyOption::Null(s) => null = Some(s.as_bytes().to_vec()),
            CopyLegacyOption::Csv(csv) => {
                kind = CopyKind::Csv;
                for c in csv {
                    match c {
                        CopyLegacyCsvOption::Header => header = true,
                        CopyLegacyCsvOption::Quote(q) => quote = Some(one_byte(*q, "QUOTE")?),
                        CopyLegacyCsvOption::Escape(e) => escape = Some(one_byte(*e, "ESCAPE")?),
                        CopyLegacyCsvOption::ForceQuote(_) | CopyLegacyCsvOption::ForceNotNull(_) => {}
                    }
                }
            }
            other => return Err(PlanError::unsupported(format!("COPY option {other}"))),
        }
    }
    let csv = kind == CopyKind::Csv;
    let quote = quote.unwrap_or(b'"');
    Ok(CopyFormat {
        kind,
        delimiter: delimiter.unwrap_or(if csv { b',' } else { b'\t' }),
        null: null.unwrap_or_else(|| if csv { Vec::new() } else { b"\\N".to_vec() }),
        quote,
        escape: escape.unwrap_or(quote),
        header,
    })
}
