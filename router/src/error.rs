//! Errors the router reports to clients.
//!
//! Every error a client can see carries a SQLSTATE, a client-safe message and a `kind()` used as
//! the `kind` label of the `pg_router_errors_total` metric.

use std::borrow::Cow;

use bytes::BytesMut;

use crate::protocol::backend::{error_response, Severity};

/// SQLSTATE codes the router raises itself (PostgreSQL `src/backend/utils/errcodes.txt`).
pub mod sqlstate {
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const CONNECTION_FAILURE: &str = "08006";
    pub const CANNOT_CONNECT: &str = "08001";
    pub const INVALID_AUTHORIZATION: &str = "28000";
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const INVALID_CATALOG_NAME: &str = "3D000";
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
    pub const INTERNAL_ERROR: &str = "XX000";
    pub const UNDEFINED_OBJECT: &str = "42704";
    pub const INVALID_TEXT_REPRESENTATION: &str = "22P02";
    pub const IN_FAILED_SQL_TRANSACTION: &str = "25P02";
    pub const READ_ONLY_SQL_TRANSACTION: &str = "25006";
    pub const NUMERIC_VALUE_OUT_OF_RANGE: &str = "22003";
    pub const INVALID_CURSOR_STATE: &str = "24000";
    pub const NOT_NULL_VIOLATION: &str = "23502";
    pub const TRANSACTION_ROLLBACK: &str = "40000";
    pub const INVALID_SAVEPOINT_SPECIFICATION: &str = "3B001";
    pub const QUERY_CANCELED: &str = "57014";
    pub const UNDEFINED_COLUMN: &str = "42703";
    pub const CHARACTER_NOT_IN_REPERTOIRE: &str = "22021";
}

/// An error raised by the router (not by a backend), ready to be sent to the client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ClientError {
    pub severity: Severity,
    pub code: Cow<'static, str>,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    kind: &'static str,
}

impl ClientError {
    pub fn new(kind: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            code: Cow::Borrowed(code),
            message: message.into(),
            detail: None,
            hint: None,
            kind,
        }
    }

    /// A FATAL error: the router closes the client connection after sending it.
    pub fn fatal(kind: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Self { severity: Severity::Fatal, ..Self::new(kind, code, message) }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// A SQLSTATE known only at run time (a shard's own code).
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Cow::Owned(code.into());
        self
    }

    pub fn is_fatal(&self) -> bool {
        self.severity == Severity::Fatal
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    pub fn encode(&self, out: &mut BytesMut) {
        error_response(
            out,
            self.severity,
            &self.code,
            &self.message,
            self.detail.as_deref(),
            self.hint.as_deref(),
        );
    }

    pub fn protocol(message: impl Into<String>) -> Self {
        Self::fatal("protocol", sqlstate::PROTOCOL_VIOLATION, message)
    }
}
