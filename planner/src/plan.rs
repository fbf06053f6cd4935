//! The plan tree: what the router does with one statement.
//!
//! A [`Plan`] is pure data, computed once per statement text (and cached) from the VSchema alone.
//! It never names shards by number: [`Target`] says how to find the shards (vindex values,
//! "every shard of keyspace k", "any one shard"), and the router resolves it against the shard
//! map it holds when the statement runs, with the Bind parameters if the target depends on them.
//!
//! The executor's contract, per [`Action`]:
//! - [`Action::Route`]: resolve `target`. One shard: send the client's text unchanged (the fast
//!   path; frames are forwarded as bytes). Several shards: send [`Scatter::sql`] to each and
//!   combine the results as [`Scatter`] says. No shard (e.g. `WHERE id = NULL`): run on any one
//!   shard of the keyspace, whose answer is then the empty result with the right columns.
//! - [`Action::InsertSplit`]: send each shard the INSERT carrying only its rows.
//! - [`Action::Broadcast`]: send the client's text unchanged to every shard of the keyspace(s).
//! - [`Action::Transaction`] / [`Action::Session`]: handled by the router's session.
//! - [`Action::Multi`]: several statements in one simple Query.

use std::fmt;
use std::sync::Arc;

use vindex::{Value, Vindex};

/// What the router does with one statement text.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The statement class (metrics, transaction tracking).
    pub class: StatementClass,
    pub action: Action,
    /// Highest `$n` placeholder used (0 when none).
    pub params: usize,
}

impl Plan {
    /// The keyspaces this statement writes to, as far as the planner can see: INSERT, UPDATE,
    /// DELETE and DDL (routed, split, scattered or broadcast). Statements of other classes
    /// (functions with side effects, COPY, statements pinned by a routing hint) are not
    /// reported.
    #[must_use]
    pub fn written_keyspaces(&self) -> Vec<&str> {
        if let Action::Multi(parts) = &self.action {
            return parts.iter().flat_map(|p| p.written_keyspaces()).collect();
        }
        if !matches!(
            self.class,
            StatementClass::Insert | StatementClass::Update | StatementClass::Delete | StatementClass::Ddl
        ) {
            return Vec::new();
        }
        match &self.action {
            Action::Route(r) => match &r.target {
                Target::AnyOf { keyspace }
                | Target::Unsharded { keyspace }
                | Target::Keys { keyspace, .. }
                | Target::All { keyspace } => vec![keyspace.as_str()],
                Target::Named { keyspace, .. } => keyspace.as_deref().into_iter().collect(),
                Target::Any => Vec::new(),
            },
            Action::InsertSplit(i) => std::iter::once(i.keyspace.as_str())
                .chain(i.lookups.iter().filter_map(|l| l.vindex.lookup_keyspace.as_deref()))
                .collect(),
            Action::Broadcast(b) => b.keyspaces.iter().map(String::as_str).collect(),
            Action::CopyIn(c) => vec![c.keyspace.as_str()],
            Action::Transaction(_) | Action::Session | Action::ShowRoute(_) | Action::Multi(_) => Vec::new(),
        }
    }
}

/// Coarse statement class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatementClass {
    Select,
    Insert,
    Update,
    Delete,
    Ddl,
    Transaction,
    Session,
    Other,
}

impl StatementClass {
    pub fn as_str(self) -> &'static str {
        match self {
            StatementClass::Select => "select",
            StatementClass::Insert => "insert",
            StatementClass::Update => "update",
            StatementClass::Delete => "delete",
            StatementClass::Ddl => "ddl",
            StatementClass::Transaction => "transaction",
            StatementClass::Session => "session",
            StatementClass::Other => "other",
        }
    }
}

// Plans are built once per statement text and shared behind an `Arc`: variant size is irrelevant.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Action {
    /// Run on the shard(s) `target` resolves to.
    Route(Route),
    /// A multi-row INSERT into a sharded table whose rows may belong to different shards.
    InsertSplit(InsertSplit),
    /// The same text on every shard of each keyspace (DDL, writes to reference tables).
    Broadcast(Broadcast),
    /// BEGIN / COMMIT / ROLLBACK / SAVEPOINT ...: the session coordinates its shards.
    Transaction(TxControl),
    /// SET / RESET / SHOW / DISCARD and other session-level statements without tables: the
    /// session tracks the effect and runs it on a shard it holds (or any shard).
    Session,
    /// `SHOW ROUTE FOR <statement>` (pg-router's own): describe the inner plan, run nothing.
    /// The router answers with one text column `route`, one row per line of [`Plan::explain`].
    ShowRoute(Arc<Plan>),
    /// Several statements in one simple Query. The router runs them as one text on one shard
    /// when every part resolves to the same single shard, and refuses otherwise.
    Multi(Vec<Arc<Plan>>),
    /// `COPY <sharded table> FROM STDIN`: the router sends the statement to every shard of the
    /// keyspace and each row of the client's data to the shard of its sharding key.
    CopyIn(CopyIn),
}

/// A `COPY ... FROM STDIN` into a sharded table ([`Action::CopyIn`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CopyIn {
    pub keyspace: String,
    /// The table as the client wrote it (the router asks a shard for its column order when
    /// the COPY has no column list).
    pub table: String,
    /// The table's primary vindex (functional, one column) and its column.
    pub vindex: KeyVindex,
    pub column: String,
    /// The sharding column's position in each row, when the COPY has a column list.
    pub position: Option<usize>,
    pub format: CopyFormat,
}

/// How COPY data is laid out (PostgreSQL's defaults filled in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFormat {
    pub kind: CopyKind,
    pub delimiter: u8,
    /// The string that stands for NULL (compared with the raw field in text format).
    pub null: Vec<u8>,
    /// CSV only.
    pub quote: u8,
    pub escape: u8,
    /// The first line is a header (every shard gets it, so `HEADER` behaves as on one server).
    pub header: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    Text,
    Csv,
    Binary,
}

/// Where a statement runs.
#[derive(Debug, Clone)]
pub enum Target {
    /// Any one shard (no tables, catalog queries). The router always uses the default
    /// keyspace's shard, so side effects (`nextval`, advisory locks) act on one server.
    Any,
    /// Any one shard of `keyspace` (reads of reference tables, which exist only in the shards of
    /// their keyspace). Added by the planner: `Any` would let the router pick a shard of another
    /// keyspace, where the table does not exist. The router prefers a shard it already holds.
    AnyOf { keyspace: String },
    /// The shard of an unsharded keyspace.
    Unsharded { keyspace: String },
    /// The shards that `values` map to through `vindex` (equality or IN-list on a vindex
    /// column). Duplicate shards are merged by the router.
    Keys { keyspace: String, vindex: KeyVindex, values: Vec<KeyExpr> },
    /// Every shard of the keyspace.
    All { keyspace: String },
    /// The shard named by a routing hint (`/* shard=NAME */` or `SET pg_router.shard`).
    Named { keyspace: Option<String>, shard: String },
}

/// The vindex chosen for a [`Target::Keys`].
#[derive(Clone)]
pub struct KeyVindex {
    /// `table.column` the predicate is on (for explain output). Shared, like the fields below:
    /// a plan made from a statement's shape is copied for every text of that shape.
    pub column: Arc<str>,
    pub vindex: Arc<dyn Vindex>,
    /// For a lookup vindex: the unsharded keyspace whose shard holds its lookup table. The
    /// router asks that table for the keyspace ids of the values, then routes by them.
    pub lookup_keyspace: Option<Arc<str>>,
}

impl KeyVindex {
    /// A vindex that maps values without IO.
    #[must_use]
    pub fn functional(column: impl Into<Arc<str>>, vindex: Arc<dyn Vindex>) -> Self {
        KeyVindex { column: column.into(), vindex, lookup_keyspace: None }
    }
}

impl fmt::Debug for KeyVindex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.vindex.name(), self.column)
    }
}

/// A sharding-key value: known at plan time, or a bind parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyExpr {
    /// Already canonicalized to the vindex's column type.
    Literal(Value),
    /// `$n`, 1-based; the router converts the bound value with
    /// `Value::from_text_param`/`from_binary_param` and the vindex's column type.
    Param(usize),
}

/// A statement routed by [`Target`].
#[derive(Debug, Clone)]
pub struct Route {
    pub target: Target,
    /// How to run and combine when the target resolves to more than one shard. `None` only for
    /// targets that always resolve to at most one shard (`Any`, `Unsharded`, `Named`, or
    /// `Keys` on a unique vindex with a single value).
    pub scatter: Option<Scatter>,
}

/// How a statement runs on several shards and how their results combine.
///
/// Shard rows have the columns of [`Scatter::sql`]'s select list ("shard columns"). Shard column
/// `i < visible` carries the client's name for merged column `i` (user alias, or the name
/// PostgreSQL gives the expression; `avg(x)` is sent as `sum(x) AS avg`), so the router builds
/// the client's RowDescription from the first `visible` shard fields (with the merged column
/// types: int8 for counts, numeric/float8 for avg). Helper columns are named `__pgr_<n>`. The router
/// turns each shard row (or each merged group of shard rows) into a "merged row" whose columns
/// are [`Scatter::columns`]; the first [`Scatter::visible`] merged columns are what the client
/// sees, the rest are helpers (sort keys or HAVING operands not in the select list).
///
/// Pipeline: k-way merge of the shard streams by [`Scatter::shard_order`] → grouping
/// ([`Scatter::group`]) with aggregation → [`Scatter::having`] → re-sort by
/// [`Scatter::final_order`] (buffered, bounded) → [`Scatter::offset`] / [`Scatter::limit`].
#[derive(Debug, Clone, PartialEq)]
pub struct Scatter {
    /// Text sent to every shard: the client's statement rewritten (AVG split into SUM and
    /// COUNT, LIMIT n+offset without OFFSET, ORDER BY group keys, helper columns appended).
    /// Placeholders `$n` keep their numbers, so the client's parameters bind unchanged.
    pub sql: String,
    /// The merged row.
    pub columns: Vec<OutputColumn>,
    /// How many leading merged columns the client sees.
    pub visible: usize,
    /// The order every shard returns its rows in (keys over shard columns); empty when shard
    /// results are simply concatenated.
    pub shard_order: Vec<SortKey>,
    /// `Some(keys)`: rows are aggregated; `keys` are the shard columns of the group key (empty
    /// for one global group, e.g. `SELECT count(*) FROM t`). With keys, `shard_order` starts
    /// with them, so equal keys arrive adjacent from the k-way merge. DISTINCT is planned as a
    /// grouping on every visible column. A global group over zero rows still yields one row
    /// (count 0, other aggregates NULL), as in PostgreSQL.
    pub group: Option<Vec<usize>>,
    /// Filter on merged rows, after grouping.
    pub having: Option<Predicate>,
    /// Re-sort merged rows by these keys (over merged columns) when the final order differs
    /// from `shard_order` (e.g. `ORDER BY count(*) DESC`). Needs buffering.
    pub final_order: Option<Vec<SortKey>>,
    /// Rows to skip after merging (never pushed to shards).
    pub offset: u64,
    /// Rows to return after the offset.
    pub limit: Option<u64>,
    /// A data-modifying statement (UPDATE/DELETE/INSERT with or without RETURNING): rows are
    /// concatenated, and the CommandComplete counts summed (`UPDATE 7`).
    pub write: bool,
    /// `Some`: the merged row is the shard row itself, whose width is only known when the
    /// shards answer (`SELECT *`, `t.*`, writes with `RETURNING *` or without RETURNING).
    /// `columns` is then empty and `visible` is 0 (both ignored); see [`PassThrough`].
    pub passthrough: Option<PassThrough>,
}

/// Pass-through of shard rows of unknown width ([`Scatter::passthrough`]).
///
/// The shard row is `[select-list columns (unknown count)] ++ [helpers trailing columns]`. The
/// client sees every column but the last `helpers`. Those helpers are the ORDER BY expressions
/// (the planner cannot know where they sit inside `*`), and in this mode `SortKey::column` in
/// [`Scatter::shard_order`] counts inside the helpers: key column `k` is shard column
/// `width - helpers + k`. The router drops the helper columns from RowDescription and DataRows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassThrough {
    pub helpers: usize,
}

/// One column of the merged row.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputColumn {
    /// A shard column passed through (a group key, or any column when not aggregating).
    Column(usize),
    /// `count(..)`: sum of the shard counts (int8; 0 when no rows).
    Count(usize),
    /// `sum(..)`: sum of the shard sums in the shard column's type (NULL when all NULL).
    Sum(usize),
    /// `min(..)`/`max(..)` of the shard values (NULLs ignored).
    Min(usize),
    Max(usize),
    /// `avg(..)`: sum of `sum` over sum of `count`. Result type: numeric when the sum column
    /// is an integer or numeric type, float8 when it is float4 or float8 (as PostgreSQL types
    /// `avg`). Numeric results use PostgreSQL's division scale rule.
    Avg {
        sum: usize,
        count: usize,
    },
    /// `count(DISTINCT x)`: shards return the distinct `x` per group (`x` is the last group
    /// key in `shard_order`); the router counts distinct non-NULL values per outer group.
    CountDistinct(usize),
    /// `bool_and` / `bool_or` of shard values.
    BoolAnd(usize),
    BoolOr(usize),
}

/// A sort key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortKey {
    pub column: usize,
    pub descending: bool,
    /// PostgreSQL's default: NULLS FIRST for DESC, NULLS LAST for ASC.
    pub nulls_first: bool,
}

/// A HAVING predicate over merged columns (only what the planner could translate; anything
/// else is refused with 0A000).
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    And(Box<Predicate>, Box<Predicate>),
    Or(Box<Predicate>, Box<Predicate>),
    Not(Box<Predicate>),
    Compare { left: Operand, op: CompareOp, right: Operand },
    IsNull { operand: Operand, negated: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A merged column.
    Column(usize),
    /// A numeric literal as written (`10`, `2.5`).
    Number(String),
    /// A string literal.
    Text(String),
    /// `$n`.
    Param(usize),
}

/// A multi-row INSERT split by shard.
#[derive(Debug, Clone, PartialEq)]
pub struct InsertSplit {
    pub keyspace: String,
    pub table: String,
    /// The table's primary vindex and each row's sharding key through it, in the client's
    /// row order.
    pub vindex: KeyVindex,
    pub keys: Vec<KeyExpr>,
    /// RETURNING present: the router returns the rows in the client's row order.
    pub returning: bool,
    /// Builds the per-shard statements.
    pub template: InsertTemplate,
    /// The table's `auto_increment` column is missing from the INSERT: the router takes one
    /// id per row from the sequence and adds the column with those values
    /// ([`InsertTemplate::sql_for_rows_filled`]).
    pub auto_increment: Option<AutoFill>,
    /// The lookup tables this table owns: the router adds one row per new row to each (see
    /// [`LookupWrite`]) before the INSERT runs.
    pub lookups: Vec<LookupWrite>,
}

/// The rows an INSERT into a lookup vindex's owner table adds to the lookup table: for row
/// `i`, (`values[i]`, the keyspace id of the row's sharding key). A NULL value (also a column
/// the INSERT leaves out) adds nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct LookupWrite {
    /// The lookup vindex (`lookup_keyspace` set) and the owner column it indexes.
    pub vindex: KeyVindex,
    /// The owner table and column, for the unique-value check.
    pub owner: String,
    pub column: String,
    /// Each row's value of the column, in the client's row order.
    pub values: Vec<KeyExpr>,
}

/// How the router fills an `auto_increment` column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoFill {
    /// The column to add.
    pub column: String,
    /// The unsharded keyspace holding the sequence, and the sequence's name there (a
    /// PostgreSQL sequence, read with `nextval`).
    pub sequence_keyspace: String,
    pub sequence: String,
    /// The column is the sharding key: `keys` is empty and the generated ids are the keys.
    pub is_key: bool,
}

/// The parsed INSERT, kept to build per-shard statements (opaque; implemented in `parse.rs`).
///
/// `template.sql_for_rows(&[0, 2])` returns the INSERT carrying only rows 0 and 2 (in that
/// order) and, because PostgreSQL refuses a statement whose `$n` it cannot type, with the
/// placeholders renumbered `$1..$k` in order of first use; the second element maps each new
/// placeholder to the client's original 1-based number (`[3, 1]` means new `$1` is the
/// client's `$3`). Without placeholders the vector is empty.
#[derive(Debug, Clone, PartialEq)]
pub struct InsertTemplate {
    pub(crate) statement: Box<sqlparser::ast::Statement>,
}

impl PartialEq for KeyVindex {
    fn eq(&self, other: &Self) -> bool {
        self.column == other.column
            && self.vindex.name() == other.vindex.name()
            && self.lookup_keyspace == other.lookup_keyspace
    }
}

/// A statement sent unchanged to every shard of the keyspaces.
#[derive(Debug, Clone, PartialEq)]
pub struct Broadcast {
    /// Sorted, deduplicated.
    pub keyspaces: Vec<String>,
    /// Results: the first shard's answer is returned (the statement is the same on all, e.g.
    /// `CREATE TABLE`), and row counts are NOT summed (a reference-table write changes the same
    /// rows on every shard).
    pub write: bool,
}

/// Transaction control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxControl {
    /// BEGIN / START TRANSACTION, with the original text (carries isolation level etc.).
    Begin,
    Commit,
    Rollback,
    Savepoint(String),
    Release(String),
    RollbackTo(String),
    /// PREPARE TRANSACTION / COMMIT PREPARED / ROLLBACK PREPARED: refused in transaction pooling.
    TwoPhase,
}
