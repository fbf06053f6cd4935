//! The planner's one error type.
//!
//! Every message is safe to show to a client (no literal values of the statement are copied into
//! it), starts with `pg-router: ` and says why the statement was refused. [`PlanError::sqlstate`]
//! is the code the router reports; [`PlanError::kind`] is a low-cardinality metric label.

/// Why a statement has no plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A shape the router cannot run correctly (SQLSTATE 0A000 feature_not_supported).
    #[error("pg-router: {reason}")]
    Unsupported { reason: String },

    /// A table that is not in the VSchema while there is no default keyspace (42P01).
    #[error("pg-router: table \"{table}\" is not in the VSchema and no default keyspace is configured")]
    UnknownTable { table: String },

    /// A literal that cannot be a value of the sharding key column (22P02, 42883, 23502...).
    #[error("pg-router: invalid value for sharding key {table}.{column}: {reason}")]
    KeyValue {
        table: String,
        column: String,
        /// The vindex crate's message (never contains the value itself).
        reason: String,
        sqlstate: &'static str,
    },

    /// Text pg-router itself must understand and cannot: a malformed routing hint, an empty
    /// `SHOW ROUTE FOR` (42601 syntax_error).
    #[error("pg-router: {reason}")]
    Syntax { reason: String },

    /// A statement nested deeper than the parser's recursion limit (54001 statement_too_complex).
    #[error("pg-router: statement is nested too deeply to plan")]
    TooComplex,

    /// Bad [`crate::PlannerOptions`] for this VSchema (22023 invalid_parameter_value).
    #[error("pg-router: invalid planner options: {reason}")]
    Options { reason: String },
}

impl PlanError {
    /// Shorthand for [`PlanError::Unsupported`].
    pub(crate) fn unsupported(reason: impl Into<String>) -> Self {
        PlanError::Unsupported { reason: reason.into() }
    }

    /// The SQLSTATE reported to the client (PostgreSQL's `src/backend/utils/errcodes.txt`).
    #[must_use]
    pub fn sqlstate(&self) -> &'static str {
        match self {
            PlanError::Unsupported { .. } => "0A000",
            PlanError::UnknownTable { .. } => "42P01",
            PlanError::KeyValue { sqlstate, .. } => sqlstate,
            PlanError::Syntax { .. } => "42601",
            PlanError::TooComplex => "54001",
            PlanError::Options { .. } => "22023",
        }
    }

    /// A low-cardinality label for metrics and logs.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            PlanError::Unsupported { .. } => "unsupported",
            PlanError::UnknownTable { .. } => "unknown_table",
            PlanError::KeyValue { .. } => "key_value",
            PlanError::Syntax { .. } => "syntax",
            PlanError::TooComplex => "too_complex",
            PlanError::Options { .. } => "options",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages() {
        let e = PlanError::unsupported("window functions across shards");
        assert_eq!(e.sqlstate(), "0A000");
        assert_eq!(e.to_string(), "pg-router: window functions across shards");
        assert_eq!(PlanError::UnknownTable { table: "t".into() }.sqlstate(), "42P01");
        assert_eq!(PlanError::TooComplex.kind(), "too_complex");
    }
}
