//! The `lookup_unique` and `lookup` vindexes: a table in PostgreSQL maps a secondary column's
//! values to keyspace ids.
//!
//! Example: `users` is sharded by `hash(id)`; queries by `email` would scatter. A lookup table
//! `users_email_lookup (email text, keyspace_id bytea)` records where each email's row lives,
//! so `WHERE email = $1` costs one lookup query plus one single-shard query. The lookup table
//! lives in an unsharded keyspace (or anywhere the router can query it).
//!
//! This crate does no IO. The vindex defines *what* the router does and the router does the
//! IO, in one of two ways:
//!
//! * Synchronously through [`LookupBackend`] (lookup / create / delete of rows), as the tests
//!   do with an in-memory table: [`Lookup::map`], [`Lookup::verify`], [`Lookup::create`],
//!   [`Lookup::delete`], [`Lookup::update`].
//! * Step by step, for an async router that cannot block inside a sync trait: build a
//!   [`LookupRequest`] with [`Lookup::request`], run [`LookupTable::select_sql`] itself, then
//!   finish with [`Lookup::destinations`] / [`Lookup::verified`]; for INSERT get the rows with
//!   [`Lookup::rows`], run [`LookupTable::insert_sql`], and (unique) read back and call
//!   [`Lookup::check_created`]. The synchronous methods are exactly these steps.
//!
//! What the router does for the *owner* table (the table whose column the vindex indexes,
//! `owner` in the VSchema), inside the same transaction as the owner-table statement:
//!
//! | owner statement | lookup operation |
//! |---|---|
//! | INSERT row (v, keyspace id k) | `create([v], [k])`: insert (v, k); for `lookup_unique` a v already mapped to another keyspace id is [`Error::LookupDuplicate`] |
//! | DELETE row | `delete([v], [k])` |
//! | UPDATE v → v' | `update(v, v', k)`: delete (v, k), create (v', k) |
//! | SELECT … WHERE col = v | `map([v])` → destinations |
//!
//! Semantics: `lookup_unique` maps a value to [`Destination::None`](crate::Destination::None) (no row) or one
//! [`Destination::KeyspaceId`](crate::Destination::KeyspaceId); several keyspace ids for one value is
//! [`Error::LookupNotUnique`]. `lookup` maps to `None`, one `KeyspaceId`, or
//! [`Destination::KeyspaceIds`](crate::Destination::KeyspaceIds) (sorted, deduplicated). `verify(v, k)` is true iff the table has
//! the row (v, k).
//!
//! NULL: `map(NULL)` → `None` without querying; `verify(NULL, k)` → false; `create` and
//! `delete` skip NULL values (a NULL secondary key is legal in the owner row, it is just not
//! findable by `=`). A lookup vindex is never a table's primary vindex (it cannot compute the
//! keyspace id of a new row), so it has no `map_for_insert`.
//!
//! Parameters: `column_type` (required: the secondary column's type), `table` (required:
//! `table` or `schema.table`), `from` (required: the value column), `to` (optional, default
//! `keyspace_id`: the keyspace id column, `bytea` holding the 8-byte big-endian id). Cost:
//! `lookup_unique` 10, `lookup` 20 (a round trip to PostgreSQL, and possibly several shards).

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{BackendError, Error, Result};
use crate::keyspace_id::KeyspaceId;
use crate::registry::VindexSpec;
use crate::value::{ColumnType, Value};
use crate::vindex::{check_value, Vindex};

mod ops;

/// Type name of the unique variant.
pub const UNIQUE_TYPE_NAME: &str = "lookup_unique";
/// Type name of the non-unique variant.
pub const NON_UNIQUE_TYPE_NAME: &str = "lookup";
pub(crate) const PARAMS: &[&str] = &["column_type", "table", "from", "to"];

/// The default name of the keyspace id column.
pub const DEFAULT_TO_COLUMN: &str = "keyspace_id";

/// One row of a lookup table.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LookupRow {
    /// The secondary column's value (never NULL).
    pub value: Value,
    /// The keyspace id of the owner row.
    pub keyspace_id: KeyspaceId,
}

/// The IO a lookup vindex needs, implemented by the router (and by test doubles).
///
/// Implementations run the SQL of [`LookupTable`] (or anything with the same semantics).
pub trait LookupBackend {
    /// For each value (never NULL), every keyspace id the table maps it to, in any order:
    /// [`LookupTable::select_sql`]. Must return exactly `values.len()` lists.
    fn lookup(
        &mut self,
        table: &LookupTable,
        values: &[Value],
    ) -> std::result::Result<Vec<Vec<KeyspaceId>>, BackendError>;

    /// Insert rows, skipping any that conflict with an existing row (for a unique table: a row
    /// with the same value; otherwise the same (value, keyspace id)):
    /// [`LookupTable::insert_sql`]. The vindex detects conflicts itself afterwards.
    fn create(&mut self, table: &LookupTable, rows: &[LookupRow]) -> std::result::Result<(), BackendError>;

    /// Delete exactly these (value, keyspace id) rows, if present: [`LookupTable::delete_sql`].
    fn delete(&mut self, table: &LookupTable, rows: &[LookupRow]) -> std::result::Result<(), BackendError>;
}

/// A lookup table's shape and the SQL the router runs against it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupTable {
    schema: Option<String>,
    table: String,
    from: String,
    to: String,
    from_type: ColumnType,
    unique: bool,
}

/// `"ident"` with embedded quotes doubled.
fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn check_ident(ident: &str) -> std::result::Result<(), &'static str> {
    if ident.is_empty() {
        Err("empty identifier")
    } else if ident.contains('\0') {
        Err("identifier contains NUL")
    } else if ident.len() > 63 {
        Err("identifier longer than 63 bytes (PostgreSQL's NAMEDATALEN - 1)")
    } else {
        Ok(())
    }
}

impl LookupTable {
    /// `table` is `name` or `schema.name` (identifiers are quoted in the SQL, so they keep
    /// their case).
    pub fn new(
        table: &str,
        from: &str,
        to: &str,
        from_type: ColumnType,
        unique: bool,
    ) -> std::result::Result<Self, &'static str> {
        let (schema, name) = match table.split_once('.') {
            Some((s, n)) => (Some(s.to_owned()), n.to_owned()),
            None => (None, table.to_owned()),
        };
        if let Some(s) = &schema {
            check_ident(s)?;
        }
        check_ident(&name)?;
        if name.contains('.') {
            return Err("table must be name or schema.name");
        }
        check_ident(from)?;
        check_ident(to)?;
        if from == to {
            return Err("from and to must be different columns");
        }
        Ok(LookupTable { schema, table: name, from: from.to_owned(), to: to.to_owned(), from_type, unique })
    }

    /// The table name as configured (`schema.name` or `name`), unquoted.
    #[must_use]
    pub fn name(&self) -> String {
        match &self.schema {
            Some(s) => format!("{s}.{}", self.table),
            None => self.table.clone(),
        }
    }

    /// The value column.
    #[must_use]
    pub fn from_column(&self) -> &str {
        &self.from
    }

    /// The keyspace id column.
    #[must_use]
    pub fn to_column(&self) -> &str {
        &self.to
    }

    /// The value column's type.
    #[must_use]
    pub fn from_type(&self) -> ColumnType {
        self.from_type
    }

    /// Is this the table of a `lookup_unique` vindex (one row per value)?
    #[must_use]
    pub fn is_unique(&self) -> bool {
        self.unique
    }

    fn quoted_table(&self) -> String {
        match &self.schema {
            Some(s) => format!("{}.{}", quote_ident(s), quote_ident(&self.table)),
            None => quote_ident(&self.table),
        }
    }

    fn unnest(&self) -> String {
        format!("SELECT * FROM unnest($1::{}[], $2::bytea[])", self.from_type.sql_type())
    }

    /// DDL for the table: unique tables key on the value, non-unique ones on (value, id).
    #[must_use]
    pub fn create_table_sql(&self) -> String {
        let (from, to) = (quote_ident(&self.from), quote_ident(&self.to));
        let key =
            if self.unique { format!("PRIMARY KEY ({from})") } else { format!("PRIMARY KEY ({from}, {to})") };
        format!(
            "CREATE TABLE IF NOT EXISTS {} ({from} {} NOT NULL, {to} bytea NOT NULL CHECK (octet_length({to}) = 8), {key})",
            self.quoted_table(),
            self.from_type.sql_type(),
        )
    }

    /// Rows for many values: `$1` is an array of the values; returns `(value, keyspace_id)`
    /// rows (`keyspace_id` as 8-byte big-endian bytea).
    #[must_use]
    pub fn select_sql(&self) -> String {
        let (from, to) = (quote_ident(&self.from), quote_ident(&self.to));
        format!(
            "SELECT {from}, {to} FROM {} WHERE {from} = ANY($1::{}[])",
            self.quoted_table(),
            self.from_type.sql_type()
        )
    }

    /// Insert rows, skipping conflicts: `$1` values, `$2` keyspace ids (bytea), same length.
    #[must_use]
    pub fn insert_sql(&self) -> String {
        let (from, to) = (quote_ident(&self.from), quote_ident(&self.to));
        let conflict = if self.unique { from.clone() } else { format!("{from}, {to}") };
        format!(
            "INSERT INTO {} ({from}, {to}) {} ON CONFLICT ({conflict}) DO NOTHING",
            self.quoted_table(),
            self.unnest()
        )
    }

    /// Delete exactly the given (value, keyspace id) pairs: `$1` values, `$2` keyspace ids.
    #[must_use]
    pub fn delete_sql(&self) -> String {
        let (from, to) = (quote_ident(&self.from), quote_ident(&self.to));
        format!("DELETE FROM {} WHERE ({from}, {to}) IN ({})", self.quoted_table(), self.unnest())
    }
}

/// SQL with the values inline ([`Value::portable_literal`]), for a router that speaks the
/// simple protocol on connections carrying a client's settings. Keyspace ids come back as 16
/// hex digits (`encode(…, 'hex')`, read with `KeyspaceId::from_str`).
impl LookupTable {
    /// The distinct keyspace ids of some values (never NULL): one text column.
    #[must_use]
    pub fn ids_literal_sql(&self, values: &[Value]) -> String {
        let (from, to) = (quote_ident(&self.from), quote_ident(&self.to));
        format!(
            "SELECT DISTINCT encode({to}, 'hex') FROM {} WHERE {from} IN ({})",
            self.quoted_table(),
            self.literals(values.iter())
        )
    }

    /// Insert rows, skipping conflicts as [`LookupTable::insert_sql`] does.
    #[must_use]
    pub fn insert_literal_sql(&self, rows: &[LookupRow]) -> String {
        let (from, to) = (quote_ident(&self.from), quote_ident(&self.to));
        let conflict = if self.unique { from.clone() } else { format!("{from}, {to}") };
        let values: Vec<String> = rows
            .iter()
            .map(|r| format!("({}, {})", r.value.portable_literal(self.from_type), id_literal(r.keyspace_id)))
            .collect();
        format!(
            "INSERT INTO {} ({from}, {to}) VALUES {} ON CONFLICT ({conflict}) DO NOTHING",
            self.quoted_table(),
            values.join(", ")
        )
    }

    /// What the table holds for each row's value: one text column `i:hex`, `i` the 1-based
    /// position in `rows` (a value may have several rows in a non-unique table).
    #[must_use]
    pub fn held_literal_sql(&self, rows: &[LookupRow]) -> String {
        let (from, to) = (quote_ident(&self.from), quote_ident(&self.to));
        let values: Vec<String> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| format!("({}, {})", i + 1, r.value.portable_literal(self.from_type)))
            .collect();
        format!(
            "SELECT v.i::text || ':' || encode(t.{to}, 'hex') FROM (VALUES {}) AS v(i, val) JOIN {} AS t ON t.{from} = v.val",
            values.join(", "),
            self.quoted_table()
        )
    }

    /// Moves a value from keyspace id `old` to `new`, only if it still maps to `old`
    /// (CommandComplete `UPDATE 1`; `UPDATE 0` when another transaction moved it first).
    #[must_use]
    pub fn take_over_sql(&self, value: &Value, old: KeyspaceId, new: KeyspaceId) -> String {
        let (from, to) = (quote_ident(&self.from), quote_ident(&self.to));
        format!(
            "UPDATE {} SET {to} = {} WHERE {from} = {} AND {to} = {}",
            self.quoted_table(),
            id_literal(new),
            value.portable_literal(self.from_type),
            id_literal(old)
        )
    }

    /// Does the owner table hold a row with this value in `column`? One row when it does.
    #[must_use]
    pub fn owner_row_literal_sql(&self, owner: &str, column: &str, value: &Value) -> String {
        format!(
            "SELECT 1 FROM {} WHERE {} = {} LIMIT 1",
            quote_ident(owner),
            quote_ident(column),
            value.portable_literal(self.from_type)
        )
    }

    fn literals<'a>(&self, values: impl Iterator<Item = &'a Value>) -> String {
        values.map(|v| v.portable_literal(self.from_type)).collect::<Vec<_>>().join(", ")
    }
}

/// A keyspace id as an 8-byte `bytea` expression.
fn id_literal(id: KeyspaceId) -> String {
    format!("decode('{id}', 'hex')")
}

/// The distinct non-NULL values to look up for a batch, and where each input's answer is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupRequest {
    values: Vec<Value>,
    /// For each input value: index into `values`, or `None` for NULL.
    slots: Vec<Option<usize>>,
}

impl LookupRequest {
    /// The values to send to the lookup table (distinct, never NULL).
    #[must_use]
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// Nothing to look up (every input was NULL, or there were none).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// A lookup vindex (`lookup_unique` or `lookup`).
#[derive(Clone, Debug)]
pub struct Lookup {
    name: String,
    table: LookupTable,
}

pub(crate) fn build_unique(spec: &VindexSpec<'_>) -> Result<Arc<dyn Vindex>> {
    build(spec, true)
}

pub(crate) fn build_non_unique(spec: &VindexSpec<'_>) -> Result<Arc<dyn Vindex>> {
    build(spec, false)
}

fn build(spec: &VindexSpec<'_>, unique: bool) -> Result<Arc<dyn Vindex>> {
    let table = LookupTable::new(
        spec.required("table")?,
        spec.required("from")?,
        spec.get("to").unwrap_or(DEFAULT_TO_COLUMN),
        spec.column_type()?,
        unique,
    )
    .map_err(|reason| spec.invalid("table", reason))?;
    Ok(Arc::new(Lookup::new(spec.name(), table)))
}

impl Vindex for Lookup {
    fn name(&self) -> &str {
        &self.name
    }
    fn type_name(&self) -> &'static str {
        if self.table.unique {
            UNIQUE_TYPE_NAME
        } else {
            NON_UNIQUE_TYPE_NAME
        }
    }
    fn column_type(&self) -> ColumnType {
        self.table.from_type
    }
    fn cost(&self) -> u32 {
        if self.table.unique {
            10
        } else {
            20
        }
    }
    fn is_unique(&self) -> bool {
        self.table.unique
    }
    fn needs_lookup(&self) -> bool {
        true
    }
    fn as_lookup(&self) -> Option<&Lookup> {
        Some(self)
    }
}

impl Lookup {
    /// A lookup vindex named `name` over `table` (uniqueness comes from the table).
    #[must_use]
    pub fn new(name: impl Into<String>, table: LookupTable) -> Self {
        Lookup { name: name.into(), table }
    }

    /// The lookup table.
    #[must_use]
    pub fn table(&self) -> &LookupTable {
        &self.table
    }

    /// Step 1 of `map`/`verify`: the distinct non-NULL values to look up.
    pub fn request(&self, values: &[Value]) -> Result<LookupRequest> {
        let mut index: HashMap<&Value, usize> = HashMap::new();
        let mut distinct = Vec::new();
        let mut slots = Vec::with_capacity(values.len());
        for v in values {
            check_value(self, v)?;
            if v.is_null() {
                slots.push(None);
                continue;
            }
            let at = *index.entry(v).or_insert_with(|| {
                distinct.push(v.clone());
                distinct.len() - 1
            });
            slots.push(Some(at));
        }
        Ok(LookupRequest { values: distinct, slots })
    }

    fn backend_error(&self, source: BackendError) -> Error {
        Error::LookupBackend { vindex: self.name.clone(), table: self.table.name(), source }
    }
}

#[cfg(test)]
mod tests;
