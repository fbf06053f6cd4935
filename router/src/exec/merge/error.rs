//! The one error type of the merge engine.
//!
//! Every variant maps to the SQLSTATE the router sends in its ErrorResponse (codes from
//! PostgreSQL `src/backend/utils/errcodes.txt`), and its `Display` is the client-safe message,
//! always prefixed `pg-router: ` so users can tell the proxy's errors from the server's.

/// An error raised while merging shard results.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    /// The merge needs something the engine does not implement (SQLSTATE 0A000).
    #[error("pg-router: {what}")]
    Unsupported { what: String },
    /// A merged value does not fit its type (SQLSTATE 22003).
    #[error("pg-router: {what} out of range")]
    Overflow { what: &'static str },
    /// A division whose divisor is zero (SQLSTATE 22012).
    #[error("pg-router: division by zero")]
    DivisionByZero,
    /// Buffering would exceed `routing.max_buffered_rows` (SQLSTATE 54000).
    #[error(
        "pg-router: this query needs to buffer more than {limit} rows across shards; \
         raise routing.max_buffered_rows or add a LIMIT"
    )]
    TooManyRows { limit: usize },
    /// A shard sent a malformed or unexpected frame (SQLSTATE 08P01).
    #[error("pg-router: protocol violation from shard: {what}")]
    Protocol { what: String },
    /// A shard value (or a HAVING literal) is not valid text for its type (SQLSTATE 22P02).
    #[error("pg-router: invalid input syntax for type {type_name}")]
    InvalidText { type_name: &'static str },
}

impl MergeError {
    /// The SQLSTATE sent to the client.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            MergeError::Unsupported { .. } => "0A000",
            MergeError::Overflow { .. } => "22003",
            MergeError::DivisionByZero => "22012",
            MergeError::TooManyRows { .. } => "54000",
            MergeError::Protocol { .. } => "08P01",
            MergeError::InvalidText { .. } => "22P02",
        }
    }

    /// A stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            MergeError::Unsupported { .. } => "unsupported",
            MergeError::Overflow { .. } => "overflow",
            MergeError::DivisionByZero => "division_by_zero",
            MergeError::TooManyRows { .. } => "too_many_rows",
            MergeError::Protocol { .. } => "protocol",
            MergeError::InvalidText { .. } => "invalid_text",
        }
    }

    pub(crate) fn unsupported(what: impl Into<String>) -> Self {
        MergeError::Unsupported { what: what.into() }
    }

    pub(crate) fn protocol(what: impl Into<String>) -> Self {
        MergeError::Protocol { what: what.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_and_prefix() {
        let cases = [
            (MergeError::unsupported("x"), "0A000"),
            (MergeError::Overflow { what: "bigint" }, "22003"),
            (MergeError::DivisionByZero, "22012"),
            (MergeError::TooManyRows { limit: 5 }, "54000"),
            (MergeError::protocol("x"), "08P01"),
            (MergeError::InvalidText { type_name: "numeric" }, "22P02"),
        ];
        for (e, code) in cases {
            assert_eq!(e.sqlstate(), code);
            assert!(e.to_string().starts_with("pg-router: "), "{e}");
        }
        assert_eq!(
            MergeError::TooManyRows { limit: 10 }.to_string(),
            "pg-router: this query needs to buffer more than 10 rows across shards; \
             raise routing.max_buffered_rows or add a LIMIT"
        );
    }
}
