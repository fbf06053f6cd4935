//! Server-side messages: the tags the router watches for in backend output, and encoders for the
//! messages the router writes to clients itself.

use bytes::{BufMut, BytesMut};

use super::frontend::put_cstr;

/// Backend message tags (protocol docs, "Message Formats").
pub mod tag {
    pub const AUTHENTICATION: u8 = b'R';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const BIND_COMPLETE: u8 = b'2';
    pub const CLOSE_COMPLETE: u8 = b'3';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    pub const DATA_ROW: u8 = b'D';
    pub const EMPTY_QUERY: u8 = b'I';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
    pub const NO_DATA: u8 = b'n';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const PORTAL_SUSPENDED: u8 = b's';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ROW_DESCRIPTION: u8 = b'T';
}

/// Transaction status carried by ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    Idle,
    InTransaction,
    Failed,
}

impl TxStatus {
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'I' => Some(Self::Idle),
            b'T' => Some(Self::InTransaction),
            b'E' => Some(Self::Failed),
            _ => None,
        }
    }

    pub fn as_byte(self) -> u8 {
        match self {
            Self::Idle => b'I',
            Self::InTransaction => b'T',
            Self::Failed => b'E',
        }
    }
}

/// Writes a message with a tag and a body produced by `body`, filling in the length.
fn message(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let len_at = out.len();
    out.put_i32(0);
    body(out);
    let len = (out.len() - len_at) as i32;
    out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

pub fn ready_for_query(out: &mut BytesMut, status: TxStatus) {
    message(out, tag::READY_FOR_QUERY, |b| b.put_u8(status.as_byte()));
}

pub fn parse_complete(out: &mut BytesMut) {
    message(out, tag::PARSE_COMPLETE, |_| {});
}

pub fn bind_complete(out: &mut BytesMut) {
    message(out, tag::BIND_COMPLETE, |_| {});
}

pub fn no_data(out: &mut BytesMut) {
    message(out, tag::NO_DATA, |_| {});
}

pub fn empty_query(out: &mut BytesMut) {
    message(out, tag::EMPTY_QUERY, |_| {});
}

pub fn command_complete(out: &mut BytesMut, command_tag: &str) {
    message(out, tag::COMMAND_COMPLETE, |b| put_cstr(b, command_tag));
}

/// A RowDescription of text columns without a source table (what `SHOW` returns).
pub fn text_row_description(out: &mut BytesMut, names: &[&str]) {
    message(out, tag::ROW_DESCRIPTION, |b| {
        b.put_i16(names.len() as i16);
        for name in names {
            put_cstr(b, name);
            b.put_i32(0); // table oid
            b.put_i16(0); // attribute number
            b.put_i32(25); // type oid: text (pg_type.dat)
            b.put_i16(-1); // typlen
            b.put_i32(-1); // typmod
            b.put_i16(0); // format: text
        }
    });
}

/// A DataRow of text values.
pub fn text_data_row(out: &mut BytesMut, values: &[&str]) {
    message(out, tag::DATA_ROW, |b| {
        b.put_i16(values.len() as i16);
        for v in values {
            b.put_i32(v.len() as i32);
            b.put_slice(v.as_bytes());
        }
    });
}

pub fn close_complete(out: &mut BytesMut) {
    message(out, tag::CLOSE_COMPLETE, |_| {});
}

pub fn parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    message(out, tag::PARAMETER_STATUS, |b| {
        put_cstr(b, name);
        put_cstr(b, value);
    });
}

pub fn backend_key_data(out: &mut BytesMut, pid: i32, secret: i32) {
    message(out, tag::BACKEND_KEY_DATA, |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

pub fn negotiate_protocol_version(out: &mut BytesMut, minor: i32, unrecognized: &[&str]) {
    message(out, tag::NEGOTIATE_PROTOCOL_VERSION, |b| {
        b.put_i32(minor);
        b.put_i32(unrecognized.len() as i32);
        for name in unrecognized {
            put_cstr(b, name);
        }
    });
}

/// Authentication request codes (`src/include/libpq/protocol.h`, `AUTH_REQ_*`).
pub enum AuthRequest<'a> {
    Ok,
    Cleartext,
    Md5 { salt: [u8; 4] },
    Sasl { mechanisms: &'a [&'a str] },
    SaslContinue { data: &'a [u8] },
    SaslFinal { data: &'a [u8] },
}

pub fn authentication(out: &mut BytesMut, req: AuthRequest<'_>) {
    message(out, tag::AUTHENTICATION, |b| match req {
        AuthRequest::Ok => b.put_i32(0),
        AuthRequest::Cleartext => b.put_i32(3),
        AuthRequest::Md5 { salt } => {
            b.put_i32(5);
            b.put_slice(&salt);
        }
        AuthRequest::Sasl { mechanisms } => {
            b.put_i32(10);
            for m in mechanisms {
                put_cstr(b, m);
            }
            b.put_u8(0);
        }
        AuthRequest::SaslContinue { data } => {
            b.put_i32(11);
            b.put_slice(data);
        }
        AuthRequest::SaslFinal { data } => {
            b.put_i32(12);
            b.put_slice(data);
        }
    });
}

/// Severity of an error or notice the router raises itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "ERROR",
            Self::Fatal => "FATAL",
        }
    }
}

/// Writes an ErrorResponse with the fields PostgreSQL always sends (S, V, C, M) plus the
/// optional detail and hint.
pub fn error_response(
    out: &mut BytesMut,
    severity: Severity,
    code: &str,
    message_text: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) {
    message(out, tag::ERROR_RESPONSE, |b| {
        for (field, value) in [
            (b'S', Some(severity.as_str())),
            (b'V', Some(severity.as_str())),
            (b'C', Some(code)),
            (b'M', Some(message_text)),
            (b'D', detail),
            (b'H', hint),
        ] {
            if let Some(v) = value {
                b.put_u8(field);
                put_cstr(b, v);
            }
        }
        b.put_u8(0);
    });
}

/// Reads the SQLSTATE (field 'C') out of an ErrorResponse or NoticeResponse body.
pub fn error_code(body: &[u8]) -> Option<&str> {
    error_field(body, b'C')
}

/// Whether an ErrorResponse body reports a FATAL or PANIC error (the server closes the
/// connection after sending it). Reads the non-localized severity 'V' (PostgreSQL ≥ 9.6).
pub fn is_fatal(body: &[u8]) -> bool {
    matches!(error_field(body, b'V').or_else(|| error_field(body, b'S')), Some("FATAL" | "PANIC"))
}

fn error_field(body: &[u8], wanted: u8) -> Option<&str> {
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            return None;
        }
        let end = tail.iter().position(|&b| b == 0)?;
        if field == wanted {
            return std::str::from_utf8(&tail[..end]).ok();
        }
        rest = &tail[end + 1..];
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::protocol::frame::next_frame;

    #[test]
    fn error_response_fields_parse_back() {
        let mut out = BytesMut::new();
        error_response(&mut out, Severity::Fatal, "28P01", "password authentication failed", None, Some("h"));
        let f = next_frame(&mut out, 1 << 20).unwrap().unwrap();
        assert_eq!(f.tag, b'E');
        assert_eq!(error_code(f.body()), Some("28P01"));
        assert!(is_fatal(f.body()));
        let msg = postgres_protocol::message::backend::Message::parse(&mut BytesMut::from(&f.bytes[..]))
            .unwrap()
            .unwrap();
        assert!(matches!(msg, postgres_protocol::message::backend::Message::ErrorResponse(_)));
    }

    #[test]
    fn ready_for_query_layout() {
        let mut out = BytesMut::new();
        ready_for_query(&mut out, TxStatus::InTransaction);
        assert_eq!(&out[..], &[b'Z', 0, 0, 0, 5, b'T']);
        assert_eq!(error_code(b"SERROR\0"), None);
    }
}
