//! Typed, bounds-checked views of the client messages the router looks into.
//!
//! Only names and query text are decoded; parameter values and everything else stay as bytes so
//! a rewritten message (a Bind whose statement name changed) copies the rest verbatim.

use bytes::{BufMut, Bytes, BytesMut};
use pgwire::messages::{startup::Startup, DecodeContext, Message};

use super::frame::{Frame, HEADER_LEN};

/// Request codes of untagged startup packets (`src/include/libpq/pqcomm.h`).
pub const CANCEL_REQUEST_CODE: i32 = (1234 << 16) | 5678;
pub const SSL_REQUEST_CODE: i32 = (1234 << 16) | 5679;
pub const GSSENC_REQUEST_CODE: i32 = (1234 << 16) | 5680;
/// Protocol 3.0; 3.2 (PostgreSQL 18) is answered with NegotiateProtocolVersion down to 3.0.
pub const PROTOCOL_3_0: i32 = 3 << 16;

/// Frontend message tags (protocol docs, "Message Formats").
pub mod tag {
    pub const BIND: u8 = b'B';
    pub const CLOSE: u8 = b'C';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    pub const DESCRIBE: u8 = b'D';
    pub const EXECUTE: u8 = b'E';
    pub const FLUSH: u8 = b'H';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const PARSE: u8 = b'P';
    pub const PASSWORD: u8 = b'p';
    pub const QUERY: u8 = b'Q';
    pub const SYNC: u8 = b'S';
    pub const TERMINATE: u8 = b'X';
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("malformed {what} message")]
    Malformed { what: &'static str },
    /// A string field with no terminator before the message ends.
    #[error("unterminated string in {what} message")]
    Unterminated { what: &'static str },
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0")]
    UnsupportedProtocol { major: u16, minor: u16 },
}

fn malformed(what: &'static str) -> DecodeError {
    DecodeError::Malformed { what }
}

/// The first packet a client sends.
#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket {
    Ssl,
    GssEnc,
    Cancel { pid: i32, secret: i32 },
    Startup { minor: u16, params: Vec<(String, String)> },
}

impl StartupPacket {
    /// Decodes the body of an untagged startup packet (length already stripped).
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let code = r.i32("startup packet")?;
        match code {
            SSL_REQUEST_CODE => Ok(Self::Ssl),
            GSSENC_REQUEST_CODE => Ok(Self::GssEnc),
            CANCEL_REQUEST_CODE => {
                Ok(Self::Cancel { pid: r.i32("CancelRequest")?, secret: r.i32("CancelRequest")? })
            }
            _ => {
                let (major, minor) = ((code >> 16) as u16, (code & 0xffff) as u16);
                if major != 3 {
                    return Err(DecodeError::UnsupportedProtocol { major, minor });
                }
                let mut buf = BytesMut::from(body);
                let startup = Startup::decode_body(&mut buf, body.len() + 4, &DecodeContext::default())
                    .map_err(|_| malformed("startup"))?;
                Ok(Self::Startup {
                    minor: startup.protocol_number_minor,
                    params: startup.parameters.into_iter().collect(),
                })
            }
        }
    }
}

/// A checked cursor over a message body.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub fn cstr(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        let bytes = self.cstr_bytes(what)?;
        std::str::from_utf8(bytes).map_err(|_| malformed(what))
    }

    /// A NUL-terminated string's bytes, without the UTF-8 check.
    pub fn cstr_bytes(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let rest = self.remaining();
        // `CStr` finds the terminator a word at a time; query texts are long enough to care.
        // (The memchr crate's vector search costs more on these short, mostly empty names.)
        let text = std::ffi::CStr::from_bytes_until_nul(rest).map_err(|_| malformed(what))?;
        self.pos += text.count_bytes() + 1;
        Ok(text.to_bytes())
    }

    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let rest = self.remaining();
        if rest.len() < n {
            return Err(malformed(what));
        }
        self.pos += n;
        Ok(&rest[..n])
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.bytes(1, what)?[0])
    }

    pub fn i16(&mut self, what: &'static str) -> Result<i16, DecodeError> {
        let b = self.bytes(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    pub fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        let b = self.bytes(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// The text of a simple Query.
pub fn query_text(frame: &Frame) -> Result<&str, DecodeError> {
    std::str::from_utf8(query_bytes(frame)?).map_err(|_| malformed("Query"))
}

/// A Query message's text as bytes, not checked to be UTF-8 (a Query forwarded unchanged
/// reaches the shard in the client's encoding).
pub fn query_bytes(frame: &Frame) -> Result<&[u8], DecodeError> {
    query_body_text(frame.body())
}

/// The text of a Query message's body: the whole body, ending in its only NUL. PostgreSQL
/// rejects a Query with anything after the text's terminator, so a message the router would
/// read as one statement must not reach it (or have its session effect recorded) as another.
pub fn query_body_text(body: &[u8]) -> Result<&[u8], DecodeError> {
    // A query text is long enough for the vector search to pay (unlike the short names
    // `Reader::cstr_bytes` looks through).
    match memchr::memchr(0, body) {
        Some(end) if end + 1 == body.len() => Ok(&body[..end]),
        Some(_) => Err(malformed("Query")),
        None => Err(DecodeError::Unterminated { what: "Query" }),
    }
}

/// A Parse message: statement name, query text, and the raw parameter-type section.
#[derive(Debug)]
pub struct Parse<'a> {
    pub name: &'a str,
    /// The query text, not yet checked to be UTF-8 ([`Parse::text`]): a text the session saw
    /// before is recognised by its bytes.
    pub query: &'a [u8],
    /// `count:i16 | oid:i32 * count`, kept raw so the message can be rebuilt under another name.
    pub param_types: &'a [u8],
}

impl<'a> Parse<'a> {
    pub fn decode(frame: &'a Frame) -> Result<Self, DecodeError> {
        Self::from_body(frame.body())
    }

    /// Decodes a Parse from its body (the message after the 5-byte header).
    pub fn from_body(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let name = r.cstr("Parse")?;
        let query = r.cstr_bytes("Parse")?;
        let param_types = r.remaining();
        let mut p = Reader::new(param_types);
        let n = p.i16("Parse")?;
        if n < 0 || p.remaining().len() != n as usize * 4 {
            return Err(malformed("Parse"));
        }
        Ok(Self { name, query, param_types })
    }

    /// The query text as UTF-8.
    pub fn text(&self) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.query).map_err(|_| malformed("Parse"))
    }
}

/// Encodes a Parse message.
pub fn encode_parse(out: &mut BytesMut, name: &str, query: &str, param_types: &[u8]) {
    let len = 4 + name.len() + 1 + query.len() + 1 + param_types.len();
    out.put_u8(tag::PARSE);
    out.put_i32(len as i32);
    put_cstr(out, name);
    put_cstr(out, query);
    out.put_slice(param_types);
}

/// A Bind message: portal and statement names; `rest_offset` is where the parameter section
/// starts in the body.
#[derive(Debug)]
pub struct Bind<'a> {
    pub portal: &'a str,
    pub statement: &'a str,
    rest: &'a [u8],
}

impl<'a> Bind<'a> {
    pub fn decode(frame: &'a Frame) -> Result<Self, DecodeError> {
        Self::from_body(frame.body())
    }

    /// Decodes a Bind's names from its body (the message after the 5-byte header).
    pub fn from_body(body: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let portal = r.cstr("Bind")?;
        let statement = r.cstr("Bind")?;
        Ok(Self { portal, statement, rest: r.remaining() })
    }

    /// The same Bind, bound to `statement` instead.
    pub fn with_statement(&self, statement: &str) -> Bytes {
        let mut out = BytesMut::new();
        self.put_with_statement(&mut out, statement);
        out.freeze()
    }

    /// Appends the same Bind, bound to `statement` instead, to `out`.
    pub fn put_with_statement(&self, out: &mut BytesMut, statement: &str) {
        put_bind(out, self.portal, statement, self.rest);
    }

    /// Where the parameter section starts in the body.
    pub fn rest_offset(&self) -> usize {
        self.portal.len() + 1 + self.statement.len() + 1
    }
}

/// Appends a Bind of `portal` to `statement` whose parameter section (everything after the
/// names) is `rest`, as the client sent it.
pub fn put_bind(out: &mut BytesMut, portal: &str, statement: &str, rest: &[u8]) {
    let len = 4 + portal.len() + 1 + statement.len() + 1 + rest.len();
    out.reserve(len + 1);
    out.put_u8(tag::BIND);
    out.put_i32(len as i32);
    put_cstr(out, portal);
    put_cstr(out, statement);
    out.put_slice(rest);
}

/// The parameter section of a Bind, decoded.
#[derive(Debug, Default)]
pub struct BindParams<'a> {
    /// Format code per parameter, expanded (PostgreSQL: zero codes = all text, one = all alike).
    pub formats: Vec<i16>,
    pub values: Vec<Option<&'a [u8]>>,
    /// Result-column format codes as sent (zero, one for all, or one per column).
    pub result_formats: Vec<i16>,
}

impl<'a> Bind<'a> {
    /// Decodes the parameter values and format codes.
    pub fn params(&self) -> Result<BindParams<'a>, DecodeError> {
        let mut r = Reader::new(self.rest);
        let nf = r.i16("Bind")?;
        let mut codes = Vec::with_capacity(nf.max(0) as usize);
        for _ in 0..nf.max(0) {
            codes.push(r.i16("Bind")?);
        }
        let np = r.i16("Bind")?;
        if nf < 0 || np < 0 || (nf > 1 && nf != np) {
            return Err(malformed("Bind"));
        }
        let mut values = Vec::with_capacity(np as usize);
        for _ in 0..np {
            let len = r.i32("Bind")?;
            values.push(if len < 0 { None } else { Some(r.bytes(len as usize, "Bind")?) });
        }
        let formats = match codes.len() {
            0 => vec![0; np as usize],
            1 => vec![codes[0]; np as usize],
            _ => codes,
        };
        let nr = r.i16("Bind")?;
        let mut result_formats = Vec::with_capacity(nr.max(0) as usize);
        for _ in 0..nr.max(0) {
            result_formats.push(r.i16("Bind")?);
        }
        if nr < 0 || !r.remaining().is_empty() {
            return Err(malformed("Bind"));
        }
        Ok(BindParams { formats, values, result_formats })
    }
}

/// Encodes a Bind of `statement` into `portal`.
pub fn encode_bind(
    out: &mut BytesMut,
    portal: &str,
    statement: &str,
    formats: &[i16],
    values: &[Option<&[u8]>],
    result_formats: &[i16],
) {
    let start = out.len();
    out.put_u8(tag::BIND);
    out.put_i32(0);
    put_cstr(out, portal);
    put_cstr(out, statement);
    out.put_i16(formats.len() as i16);
    for f in formats {
        out.put_i16(*f);
    }
    out.put_i16(values.len() as i16);
    for v in values {
        match v {
            None => out.put_i32(-1),
            Some(b) => {
                out.put_i32(b.len() as i32);
                out.put_slice(b);
            }
        }
    }
    out.put_i16(result_formats.len() as i16);
    for f in result_formats {
        out.put_i16(*f);
    }
    let len = (out.len() - start - 1) as i32;
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

/// Encodes a Describe of a portal.
pub fn encode_describe_portal(out: &mut BytesMut, portal: &str) {
    out.put_u8(tag::DESCRIBE);
    out.put_i32((4 + 1 + portal.len() + 1) as i32);
    out.put_u8(b'P');
    put_cstr(out, portal);
}

/// Encodes an Execute of a portal (`max_rows` 0 = all).
pub fn encode_execute(out: &mut BytesMut, portal: &str, max_rows: i32) {
    out.put_u8(tag::EXECUTE);
    out.put_i32((4 + portal.len() + 1 + 4) as i32);
    put_cstr(out, portal);
    out.put_i32(max_rows);
}

/// The row limit of an Execute message.
pub fn execute_max_rows(frame: &Frame) -> Result<(&str, i32), DecodeError> {
    execute_from_body(frame.body())
}

/// The portal and row limit of an Execute, from its body (the message after the header).
pub fn execute_from_body(body: &[u8]) -> Result<(&str, i32), DecodeError> {
    let mut r = Reader::new(body);
    let portal = r.cstr("Execute")?;
    let max = r.i32("Execute")?;
    Ok((portal, max))
}

/// What a Describe or Close names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Statement,
    Portal,
}

/// A Describe or Close message.
#[derive(Debug)]
pub struct DescribeOrClose<'a> {
    pub target: Target,
    pub name: &'a str,
}

impl<'a> DescribeOrClose<'a> {
    pub fn decode(frame: &'a Frame) -> Result<Self, DecodeError> {
        Self::from_body(frame.tag, frame.body())
    }

    /// Decodes a Describe or Close (`msg_tag`) from its body (the message after the header).
    pub fn from_body(msg_tag: u8, body: &'a [u8]) -> Result<Self, DecodeError> {
        let what = if msg_tag == tag::CLOSE { "Close" } else { "Describe" };
        let mut r = Reader::new(body);
        let target = match r.u8(what)? {
            b'S' => Target::Statement,
            b'P' => Target::Portal,
            _ => return Err(malformed(what)),
        };
        let name = r.cstr(what)?;
        if !r.remaining().is_empty() {
            return Err(malformed(what));
        }
        Ok(Self { target, name })
    }
}

/// Encodes a Describe or Close (`msg_tag`) of a statement.
pub fn encode_statement_target(out: &mut BytesMut, msg_tag: u8, name: &str) {
    out.put_u8(msg_tag);
    out.put_i32((4 + 1 + name.len() + 1) as i32);
    out.put_u8(b'S');
    put_cstr(out, name);
}

/// Encodes a simple Query.
pub fn encode_query(out: &mut BytesMut, sql: &str) {
    out.put_u8(tag::QUERY);
    out.put_i32((4 + sql.len() + 1) as i32);
    put_cstr(out, sql);
}

/// Encodes a Sync.
pub fn encode_sync(out: &mut BytesMut) {
    out.put_u8(tag::SYNC);
    out.put_i32(4);
}

pub(crate) fn put_cstr(out: &mut BytesMut, s: &str) {
    out.put_slice(s.as_bytes());
    out.put_u8(0);
}

/// SASLInitialResponse: mechanism name and the optional initial client data.
pub fn sasl_initial_response(body: &[u8]) -> Result<(&str, &[u8]), DecodeError> {
    let mut r = Reader::new(body);
    let mechanism = r.cstr("SASLInitialResponse")?;
    let len = r.i32("SASLInitialResponse")?;
    let data = if len < 0 { &[][..] } else { r.bytes(len as usize, "SASLInitialResponse")? };
    Ok((mechanism, data))
}

/// A PasswordMessage: the NUL-terminated password (cleartext or md5 digest).
pub fn password(body: &[u8]) -> Result<&str, DecodeError> {
    Reader::new(body).cstr("PasswordMessage")
}

/// Byte offset of the body in a frame; useful for callers building frames by hand.
pub const BODY_OFFSET: usize = HEADER_LEN;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Frame {
        let mut v = BytesMut::new();
        v.put_u8(tag);
        v.put_i32(body.len() as i32 + 4);
        v.put_slice(body);
        Frame { tag, bytes: v.freeze() }
    }

    #[test]
    fn parse_roundtrip() {
        let mut out = BytesMut::new();
        encode_parse(&mut out, "s1", "select $1", &[0, 1, 0, 0, 0, 23]);
        let f = Frame { tag: b'P', bytes: out.freeze() };
        let p = Parse::decode(&f).unwrap();
        assert_eq!((p.name, p.text().unwrap(), p.param_types), ("s1", "select $1", &[0, 1, 0, 0, 0, 23][..]));
        let bad = frame(b'P', b"s1\0select\0\0\x02\0\0\0\x17");
        assert!(Parse::decode(&bad).is_err());
        // The text's UTF-8 check is the caller's, through `text`.
        let latin1 = frame(b'P', b"\0select '\xe9'\0\0\0");
        assert!(Parse::decode(&latin1).unwrap().text().is_err());
    }

    #[test]
    fn bind_rename_keeps_parameters() {
        let body = b"p\0s1\0\0\x01\0\x01\0\x01\0\0\0\x0242\0\x01\0\x00";
        let f = frame(b'B', body);
        let b = Bind::decode(&f).unwrap();
        assert_eq!((b.portal, b.statement), ("p", "s1"));
        let renamed = b.with_statement("pgr_7");
        let rf = Frame { tag: b'B', bytes: renamed };
        let b2 = Bind::decode(&rf).unwrap();
        assert_eq!(b2.statement, "pgr_7");
        assert_eq!(&rf.body()[8..], &body[5..]);
    }

    #[test]
    fn a_query_is_its_text_and_one_terminator() {
        assert_eq!(query_bytes(&frame(b'Q', b"SELECT 1\0")), Ok(&b"SELECT 1"[..]));
        assert_eq!(query_text(&frame(b'Q', b"\0")), Ok(""));
        for body in [&b"SET a = 1\0SELECT 1\0"[..], b"SELECT 1\0x"] {
            assert_eq!(query_bytes(&frame(b'Q', body)), Err(malformed("Query")), "{body:?}");
        }
        for body in [&b"SELECT 1"[..], b""] {
            assert_eq!(query_bytes(&frame(b'Q', body)), Err(DecodeError::Unterminated { what: "Query" }));
        }
        assert!(query_text(&frame(b'Q', b"SELECT '\xe9'\0")).is_err());
    }

    #[test]
    fn truncated_messages_are_errors_not_panics() {
        for body in [&b""[..], b"x", b"p\0", b"S"] {
            let _ = Bind::decode(&frame(b'B', body));
            let _ = Parse::decode(&frame(b'P', body));
            let _ = DescribeOrClose::decode(&frame(b'D', body));
            let _ = sasl_initial_response(body);
        }
        assert!(sasl_initial_response(b"SCRAM-SHA-256\0\0\0\0\x09ab").is_err());
        assert!(DescribeOrClose::decode(&frame(b'C', b"X\0")).is_err());
    }

    #[test]
    fn startup_packets() {
        assert_eq!(StartupPacket::decode(&SSL_REQUEST_CODE.to_be_bytes()), Ok(StartupPacket::Ssl));
        let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0alice\0database\0app\0\0");
        match StartupPacket::decode(&body).unwrap() {
            StartupPacket::Startup { params, .. } => {
                assert!(params.contains(&("user".into(), "alice".into())));
            }
            other => panic!("{other:?}"),
        }
        assert!(StartupPacket::decode(&(2i32 << 16).to_be_bytes()).is_err());
        assert!(StartupPacket::decode(&CANCEL_REQUEST_CODE.to_be_bytes()).is_err());
    }
}
