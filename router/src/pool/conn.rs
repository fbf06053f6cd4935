//! One connection to a shard: startup, authentication, and the state the router tracks on it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::protocol::backend::tag;
use crate::protocol::frame::{next_frame, PG_MAX_MESSAGE_LEN};
use crate::stream::Stream;

/// Why a backend connection could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot connect to shard {shard} at {addr}: {source}")]
    Connect {
        shard: String,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out connecting to shard {shard} at {addr}")]
    ConnectTimeout { shard: String, addr: String },
    #[error("shard {shard} refused TLS")]
    TlsRefused { shard: String },
    #[error("TLS handshake with shard {shard} failed: {source}")]
    Tls {
        shard: String,
        #[source]
        source: std::io::Error,
    },
    /// The shard answered with an ErrorResponse (bad password, unknown database, ...).
    #[error("shard {shard}: {message}")]
    Server { shard: String, code: String, message: String },
    #[error("shard {shard} requires a password for role {user}, and none is configured")]
    NoPassword { shard: String, user: String },
    #[error("shard {shard} sent an unexpected message during {phase}")]
    Protocol { shard: String, phase: &'static str },
    #[error("lost connection to shard {shard}: {source}")]
    Io {
        shard: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where a backend listens: a TCP address, or PostgreSQL's Unix-domain socket file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendAddr {
    Tcp(SocketAddr),
    Unix(Arc<Path>),
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(a) => a.fmt(f),
            Self::Unix(p) => p.display().fmt(f),
        }
    }
}

/// The socket file of the server listening on `port` whose `host` is a directory (starts with
/// `/`), as libpq names it; `None` for a host name or IP address.
pub fn unix_socket_path(host: &str, port: u16) -> Option<PathBuf> {
    host.starts_with('/').then(|| Path::new(host).join(format!(".s.PGSQL.{port}")))
}

/// What a CancelRequest for this connection needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelTarget {
    pub addr: BackendAddr,
    pub pid: i32,
    pub secret: i32,
}

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct ConnectParams {
    pub shard: String,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: Option<String>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub connect_timeout: Duration,
}

/// Session settings made with SET, as SQL literals keyed by lower-case name. Shared copy on
/// write: sessions that logged in with the same settings hold one map, and so do the
/// connections they used, so the check at every checkout (are this connection's settings the
/// session's?) is usually a pointer comparison.
#[derive(Clone, Debug, Default)]
pub struct Settings(Arc<BTreeMap<String, String>>);

impl Settings {
    pub fn new(map: BTreeMap<String, String>) -> Self {
        Self(Arc::new(map))
    }

    /// The map, to change (copied first if shared).
    pub fn make_mut(&mut self) -> &mut BTreeMap<String, String> {
        Arc::make_mut(&mut self.0)
    }
}

impl std::ops::Deref for Settings {
    type Target = BTreeMap<String, String>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl PartialEq for Settings {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
    }
}

impl Eq for Settings {}

/// A live, authenticated backend connection.
pub struct BackendConn {
    pub stream: Stream,
    /// Bytes read from the shard and not yet consumed.
    pub rbuf: BytesMut,
    pub cancel: CancelTarget,
    /// ParameterStatus values the shard reported at startup (server_version, ...).
    pub server_params: Vec<(String, String)>,
    /// Session settings applied with SET on this connection, beyond the startup defaults.
    pub settings: Settings,
    /// Router-global prepared statement ids already prepared on this connection.
    pub prepared: foldhash::HashSet<u64>,
    pub created: Instant,
    /// Session state may have changed (SET, LISTEN, temp tables...): reset before reuse.
    pub needs_reset: bool,
    pub shard: String,
}

impl BackendConn {
    pub async fn connect(p: &ConnectParams) -> Result<Self, BackendError> {
        let unix = unix_socket_path(&p.host, p.port);
        let addr_text = match &unix {
            Some(path) => path.display().to_string(),
            None => format!("{}:{}", p.host, p.port),
        };
        // One limit for the connection and the login both.
        let fut = async {
            let refused =
                |source| BackendError::Connect { shard: p.shard.clone(), addr: addr_text.clone(), source };
            let (stream, addr) = match unix {
                Some(path) => {
                    let s = UnixStream::connect(&path).await.map_err(refused)?;
                    (Stream::Unix(s), BackendAddr::Unix(path.into()))
                }
                None => {
                    let tcp = TcpStream::connect((p.host.as_str(), p.port)).await.map_err(refused)?;
                    let addr = tcp
                        .peer_addr()
                        .map_err(|source| BackendError::Io { shard: p.shard.clone(), source })?;
                    let _ = tcp.set_nodelay(true);
                    (Stream::Plain(tcp), BackendAddr::Tcp(addr))
                }
            };
            Self::startup(p, stream, addr).await
        };
        crate::timer::timeout(p.connect_timeout, fut)
            .await
            .map_err(|_| BackendError::ConnectTimeout { shard: p.shard.clone(), addr: addr_text.clone() })?
    }

    async fn startup(p: &ConnectParams, stream: Stream, addr: BackendAddr) -> Result<Self, BackendError> {
        let io = |source| BackendError::Io { shard: p.shard.clone(), source };
        let mut out = BytesMut::new();
        let mut stream = match (&p.tls, stream) {
            (None, stream) => stream,
            (Some(tls), Stream::Plain(mut tcp)) => {
                frontend::ssl_request(&mut out);
                tcp.write_all(&out).await.map_err(io)?;
                out.clear();
                if tcp.read_u8().await.map_err(io)? != b'S' {
                    return Err(BackendError::TlsRefused { shard: p.shard.clone() });
                }
                let name = rustls::pki_types::ServerName::try_from(p.host.clone()).map_err(|e| {
                    BackendError::Tls { shard: p.shard.clone(), source: std::io::Error::other(e) }
                })?;
                let tls = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|source| BackendError::Tls { shard: p.shard.clone(), source })?;
                Stream::Tls(Box::new(tls.into()))
            }
            // TLS is asked of a Unix-domain socket (a control-plane address for a shard the
            // config reaches over TLS): refused rather than silently done without.
            (Some(_), _) => {
                let source = std::io::Error::other("TLS is not available over a Unix-domain socket");
                return Err(BackendError::Tls { shard: p.shard.clone(), source });
            }
        };
        let params = [("user", p.user.as_str()), ("database", p.database.as_str())];
        frontend::startup_message(params.iter().copied(), &mut out).map_err(io)?;
        stream.write_all(&out).await.map_err(io)?;
        out.clear();

        let mut conn = Self {
            stream,
            rbuf: BytesMut::with_capacity(16 * 1024),
            cancel: CancelTarget { addr, pid: 0, secret: 0 },
            server_params: Vec::new(),
            settings: Settings::default(),
            prepared: Default::default(),
            created: Instant::now(),
            needs_reset: false,
            shard: p.shard.clone(),
        };
        let mut scram: Option<ScramSha256> = None;
        loop {
            let msg = conn.read_message("startup").await?;
            match msg {
                Message::AuthenticationOk => {}
                Message::AuthenticationCleartextPassword => {
                    let pw = conn.password(p)?;
                    frontend::password_message(pw.as_bytes(), &mut out).map_err(io)?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let pw = conn.password(p)?;
                    let hash = postgres_protocol::authentication::md5_hash(
                        p.user.as_bytes(),
                        pw.as_bytes(),
                        body.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), &mut out).map_err(io)?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut found = false;
                    while let Some(m) = fallible_next(&mut mechanisms) {
                        found |= m == "SCRAM-SHA-256";
                    }
                    if !found {
                        return Err(BackendError::Protocol {
                            shard: p.shard.clone(),
                            phase: "SASL negotiation",
                        });
                    }
                    let pw = conn.password(p)?;
                    let s = ScramSha256::new(pw.as_bytes(), ChannelBinding::unsupported());
                    frontend::sasl_initial_response("SCRAM-SHA-256", s.message(), &mut out).map_err(io)?;
                    scram = Some(s);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or(BackendError::Protocol { shard: p.shard.clone(), phase: "SASL" })?;
                    s.update(body.data()).map_err(io)?;
                    frontend::sasl_response(s.message(), &mut out).map_err(io)?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or(BackendError::Protocol { shard: p.shard.clone(), phase: "SASL" })?;
                    s.finish(body.data()).map_err(io)?;
                }
                Message::ParameterStatus(body) => {
                    let (Ok(name), Ok(value)) = (body.name(), body.value()) else {
                        return Err(BackendError::Protocol { shard: p.shard.clone(), phase: "startup" });
                    };
                    conn.server_params.push((name.to_owned(), value.to_owned()));
                }
                Message::BackendKeyData(body) => {
                    conn.cancel.pid = body.process_id();
                    conn.cancel.secret = body.secret_key();
                }
                Message::NoticeResponse(_) => {}
                Message::ReadyForQuery(_) => return Ok(conn),
                Message::ErrorResponse(body) => return Err(server_error(&p.shard, body)),
                _ => return Err(BackendError::Protocol { shard: p.shard.clone(), phase: "startup" }),
            }
            if !out.is_empty() {
                conn.stream.write_all(&out).await.map_err(io)?;
                out.clear();
            }
        }
    }

    fn password<'a>(&self, p: &'a ConnectParams) -> Result<&'a str, BackendError> {
        p.password
            .as_deref()
            .ok_or_else(|| BackendError::NoPassword { shard: p.shard.clone(), user: p.user.clone() })
    }

    async fn read_message(&mut self, phase: &'static str) -> Result<Message, BackendError> {
        loop {
            match Message::parse(&mut self.rbuf) {
                Ok(Some(m)) => return Ok(m),
                Ok(None) => {}
                Err(_) => return Err(BackendError::Protocol { shard: self.shard.clone(), phase }),
            }
            let n = self
                .stream
                .read_buf(&mut self.rbuf)
                .await
                .map_err(|source| BackendError::Io { shard: self.shard.clone(), source })?;
            if n == 0 {
                return Err(BackendError::Io {
                    shard: self.shard.clone(),
                    source: std::io::ErrorKind::UnexpectedEof.into(),
                });
            }
        }
    }

    /// Runs router-issued SQL (a reset, a health check, SET replay) and discards the results.
    /// Fails if the statement fails or the connection is not idle afterwards.
    pub async fn run_internal(&mut self, sql: &str) -> Result<(), BackendError> {
        self.exchange(sql).await.map(|_| ())
    }

    /// Runs a statement of the router's own (simple protocol) and returns the first column of
    /// every row as text (`None` for NULL).
    pub async fn query_column(&mut self, sql: &str) -> Result<Vec<Option<String>>, BackendError> {
        self.exchange(sql).await.map(|(values, _)| values)
    }

    /// Runs a statement of the router's own and returns its CommandComplete tag (`COMMIT`, or
    /// `ROLLBACK` when PostgreSQL rolled back a failed transaction instead).
    pub async fn run_for_tag(&mut self, sql: &str) -> Result<String, BackendError> {
        self.exchange(sql).await.map(|(_, tag)| tag)
    }

    /// Runs a statement of the router's own inside a transaction block it opened on this
    /// connection (idle or in a transaction afterwards, not failed): the first column of every
    /// row and the CommandComplete tag.
    pub async fn query_in_transaction(
        &mut self,
        sql: &str,
    ) -> Result<(Vec<Option<String>>, String), BackendError> {
        self.exchange_expecting(sql, b"IT").await
    }

    async fn exchange(&mut self, sql: &str) -> Result<(Vec<Option<String>>, String), BackendError> {
        self.exchange_expecting(sql, b"I").await
    }

    /// `statuses`: the ReadyForQuery statuses that mean success.
    async fn exchange_expecting(
        &mut self,
        sql: &str,
        statuses: &[u8],
    ) -> Result<(Vec<Option<String>>, String), BackendError> {
        let mut values = Vec::new();
        let mut command_tag = String::new();
        let mut out = BytesMut::new();
        crate::protocol::frontend::encode_query(&mut out, sql);
        let shard = self.shard.clone();
        self.stream
            .write_all(&out)
            .await
            .map_err(|source| BackendError::Io { shard: shard.clone(), source })?;
        let mut failed = None;
        loop {
            let frame = loop {
                match next_frame(&mut self.rbuf, PG_MAX_MESSAGE_LEN) {
                    Ok(Some(f)) => break f,
                    Ok(None) => {}
                    Err(_) => return Err(BackendError::Protocol { shard, phase: "internal query" }),
                }
                let n = self
                    .stream
                    .read_buf(&mut self.rbuf)
                    .await
                    .map_err(|source| BackendError::Io { shard: shard.clone(), source })?;
                if n == 0 {
                    return Err(BackendError::Io { shard, source: std::io::ErrorKind::UnexpectedEof.into() });
                }
            };
            match frame.tag {
                tag::ERROR_RESPONSE => {
                    let mut b = BytesMut::from(&frame.bytes[..]);
                    failed = Some(match Message::parse(&mut b) {
                        Ok(Some(Message::ErrorResponse(body))) => server_error(&shard, body),
                        _ => BackendError::Protocol { shard: shard.clone(), phase: "internal query" },
                    });
                }
                tag::DATA_ROW => values.push(first_column(frame.body())),
                tag::COMMAND_COMPLETE => {
                    let body = frame.body();
                    command_tag =
                        String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(body)).into_owned();
                }
                tag::READY_FOR_QUERY => {
                    if let Some(e) = failed {
                        return Err(e);
                    }
                    if !matches!(frame.body(), [status] if statuses.contains(status)) {
                        return Err(BackendError::Protocol { shard, phase: "internal query" });
                    }
                    return Ok((values, command_tag));
                }
                tag::COPY_IN_RESPONSE | tag::COPY_OUT_RESPONSE | tag::COPY_BOTH_RESPONSE => {
                    return Err(BackendError::Protocol { shard, phase: "internal query" });
                }
                _ => {}
            }
        }
    }
}

fn fallible_next<I>(it: &mut I) -> Option<I::Item>
where
    I: fallible_iterator::FallibleIterator,
{
    it.next().ok().flatten()
}

fn server_error(shard: &str, body: postgres_protocol::message::backend::ErrorResponseBody) -> BackendError {
    use fallible_iterator::FallibleIterator as _;
    let mut code = String::from("XX000");
    let mut message = String::new();
    let mut fields = body.fields();
    while let Ok(Some(f)) = fields.next() {
        match f.type_() {
            b'C' => code = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            b'M' => message = String::from_utf8_lossy(f.value_bytes()).into_owned(),
            _ => {}
        }
    }
    BackendError::Server { shard: shard.to_owned(), code, message }
}

/// The first column of a DataRow body as text (`None` for NULL or a malformed row).
fn first_column(body: &[u8]) -> Option<String> {
    let count = i16::from_be_bytes(body.get(..2)?.try_into().ok()?);
    if count < 1 {
        return None;
    }
    let len = i32::from_be_bytes(body.get(2..6)?.try_into().ok()?);
    let len = usize::try_from(len).ok()?;
    body.get(6..6 + len).map(|v| String::from_utf8_lossy(v).into_owned())
}
