//! One task per client connection.
//!
//! [`run`] drives a session through its states: opening (TLS, startup, auth), then a loop that
//! reads client frames, forwards them as bytes to a backend connection checked out for the
//! transaction, and streams the backend's frames back until the transaction ends.
//!
//! Transaction pooling bookkeeping lives here: named prepared statements are renamed to
//! router-global names and prepared lazily on each backend ([`statements`]); session settings
//! are replayed on whichever backend serves the client; statements that cannot work without a
//! dedicated backend are refused ([`classify`]). [`pending`] tracks the backend responses still
//! due, which tells when a backend can go back to the pool.

pub mod classify;
pub mod login;
pub mod pending;
pub mod statements;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;

use crate::cancel::{CancelRegistry, CancelSlot};
use crate::config::{Config, PoolMode};
use crate::error::{sqlstate, ClientError};
use crate::metrics::Metrics;
use crate::pool::{BackendError, CheckoutError, Pool, PoolKey, Pooled, Pools};
use crate::protocol::backend::{self, tag as btag, TxStatus};
use crate::protocol::frame::{self, peek_header, PG_MAX_MESSAGE_LEN};
use crate::protocol::frontend::{self, tag, Bind, DescribeOrClose, Parse, Target};
use crate::protocol::Frame;
use crate::stream::Stream;
use classify::{classify, SessionEffect, StatementKind};
use login::{Login, Opening};
use pending::{Disposition, Expect, Pending, UndoneParse};
use statements::{StatementDef, StatementRegistry};

/// Everything sessions share.
pub struct Shared {
    pub config: Arc<Config>,
    pub pools: Arc<Pools>,
    pub cancels: CancelRegistry,
    pub statements: StatementRegistry,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub metrics: Metrics,
}

/// Why a session ended abnormally.
enum End {
    /// Tell the client (FATAL), then close.
    Fatal(ClientError),
    /// The client is gone.
    ClientGone,
}

impl From<ClientError> for End {
    fn from(e: ClientError) -> Self {
        End::Fatal(e)
    }
}

/// Serves one client connection until it ends.
pub async fn run(tcp: TcpStream, shared: Arc<Shared>, shutdown: broadcast::Receiver<()>) {
    let _ = tcp.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let opened = tokio::time::timeout(shared.config.login_timeout, login::open(tcp, &shared, &mut buf)).await;
    let (stream, params, minor) = match opened {
        Err(_) => return,
        Ok(Err(e)) => {
            if let Some(mut s) = e.stream {
                report_fatal(&shared, &mut s, &e.error).await;
            }
            return;
        }
        Ok(Ok(Opening::Cancel { pid, secret })) => {
            shared.cancels.cancel(pid, secret).await;
            return;
        }
        Ok(Ok(Opening::Startup { stream, params, minor })) => (stream, params, minor),
    };
    let mut stream = stream;
    let greeted = tokio::time::timeout(
        shared.config.login_timeout,
        greet(&shared, &mut stream, &mut buf, params, minor),
    )
    .await;
    let session = match greeted {
        Err(_) => {
            let e = ClientError::fatal("login_timeout", sqlstate::CONNECTION_FAILURE, "login timed out");
            report_fatal(&shared, &mut stream, &e).await;
            return;
        }
        Ok(Err(e)) => {
            report_fatal(&shared, &mut stream, &e).await;
            return;
        }
        Ok(Ok(parts)) => parts,
    };
    let (login, pool, key, backend) = session;
    let cancel = shared.cancels.register();
    let mut s = Session::new(shared.clone(), stream, buf, login, pool, key, cancel.slot.clone());
    s.backend = backend;
    s.set_cancel_target();
    let mut out = BytesMut::new();
    backend::backend_key_data(&mut out, cancel.key.0, cancel.key.1);
    backend::ready_for_query(&mut out, TxStatus::Idle);
    s.to_client.extend_from_slice(&out);
    shared.metrics.clients.increment(1.0);
    let end = s.serve(shutdown).await;
    shared.metrics.clients.decrement(1.0);
    if let Err(End::Fatal(e)) = end {
        s.to_client.clear();
        report_fatal(&shared, &mut s.client, &e).await;
    }
    s.close_backend();
}

async fn report_fatal(shared: &Shared, stream: &mut Stream, e: &ClientError) {
    shared.metrics.error(e.kind());
    tracing::info!(kind = e.kind(), code = e.code, "closing client: {}", e.message);
    let mut out = BytesMut::new();
    e.encode(&mut out);
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

type Greeting = (Login, Pool, PoolKey, Option<Pooled>);

/// Authenticates the client and sends the greeting up to (not including) BackendKeyData.
async fn greet(
    shared: &Shared,
    stream: &mut Stream,
    buf: &mut BytesMut,
    params: Vec<(String, String)>,
    minor: u16,
) -> Result<Greeting, ClientError> {
    let declined: Vec<String> =
        params.iter().filter(|(k, _)| k.starts_with("_pq_.")).map(|(k, _)| k.clone()).collect();
    let login = login::check_startup(shared, params, stream.is_tls())?;
    let Some(user) = shared.config.users.get(&login.user) else {
        return Err(ClientError::fatal(
            "auth_failed",
            sqlstate::INVALID_AUTHORIZATION,
            format!("role \"{}\" does not exist", login.user),
        ));
    };
    if minor > 0 || !declined.is_empty() {
        let mut out = BytesMut::new();
        let names: Vec<&str> = declined.iter().map(String::as_str).collect();
        backend::negotiate_protocol_version(&mut out, 0, &names);
        stream.write_all(&out).await.map_err(|_| ClientError::protocol("client went away"))?;
    }
    crate::auth::authenticate(stream, buf, &login.user, user).await?;
    if !shared.config.databases.contains(&login.database) {
        return Err(ClientError::fatal(
            "unknown_database",
            sqlstate::INVALID_CATALOG_NAME,
            format!("database \"{}\" does not exist", login.database),
        ));
    }
    // Until the planner routes statements, everything goes to the first shard.
    let key = PoolKey {
        shard: 0,
        database: login.database.as_str().into(),
        user: user.backend_user.as_str().into(),
    };
    let pool = shared.pools.pool(&key, user.backend_password.as_deref());
    let mut held = None;
    if shared.config.pool_mode == PoolMode::Session || Pools::server_params(&pool).is_none() {
        let conn = shared.pools.checkout(&pool, &key).await.map_err(checkout_error)?;
        if shared.config.pool_mode == PoolMode::Session {
            held = Some(conn);
        }
    }
    let mut out = BytesMut::new();
    for (name, value) in Pools::server_params(&pool).unwrap_or_default() {
        let client_value = login.reported.iter().find(|(k, _)| k.eq_ignore_ascii_case(&name)).map(|(_, v)| v);
        backend::parameter_status(&mut out, &name, client_value.unwrap_or(&value));
    }
    stream.write_all(&out).await.map_err(|_| ClientError::protocol("client went away"))?;
    Ok((login, pool, key, held))
}

fn checkout_error(e: CheckoutError) -> ClientError {
    match e {
        CheckoutError::Timeout { .. } => {
            ClientError::new("pool_timeout", sqlstate::TOO_MANY_CONNECTIONS, format!("pg-router: {e}"))
                .with_hint("Raise pool.max_size or pool.checkout_timeout_ms, or shorten transactions.")
        }
        CheckoutError::Backend(b) => backend_error(b),
        CheckoutError::Closed { .. } => {
            ClientError::new("shutdown", sqlstate::ADMIN_SHUTDOWN, format!("pg-router: {e}"))
        }
    }
}

fn backend_error(e: BackendError) -> ClientError {
    match &e {
        BackendError::Server { code, message, .. } => {
            // Keep the shard's own SQLSTATE (3D000, 28P01, 53300, ...) so clients react as they
            // would to PostgreSQL.
            let code: &'static str = match code.as_str() {
                "3D000" => sqlstate::INVALID_CATALOG_NAME,
                "28P01" => sqlstate::INVALID_PASSWORD,
                "28000" => sqlstate::INVALID_AUTHORIZATION,
                "53300" => sqlstate::TOO_MANY_CONNECTIONS,
                "57P03" | "57P01" => sqlstate::CANNOT_CONNECT,
                _ => sqlstate::CANNOT_CONNECT,
            };
            ClientError::new("backend_login", code, format!("pg-router: {e}"))
                .with_detail(format!("The shard reported: {message}"))
        }
        _ => ClientError::new("backend_connect", sqlstate::CANNOT_CONNECT, format!("pg-router: {e}")),
    }
}

struct Session {
    shared: Arc<Shared>,
    client: Stream,
    cbuf: BytesMut,
    to_client: BytesMut,
    to_backend: BytesMut,
    backend: Option<Pooled>,
    pool: Pool,
    key: PoolKey,
    mode: PoolMode,
    max_message: usize,
    pending: Pending,
    /// Transaction status from the backend's last ReadyForQuery.
    tx: TxStatus,
    in_copy: bool,
    /// A message was refused in the extended protocol: drop client messages up to Sync, as
    /// PostgreSQL does after an error.
    client_skip: bool,
    /// The client's named prepared statements.
    statements: HashMap<String, Arc<StatementDef>>,
    /// Session settings to replay, as SQL text keyed by lower-case name.
    settings: BTreeMap<String, String>,
    unnamed_kind: StatementKind,
    cancel: CancelSlot,
    round_started: Option<Instant>,
    draining: bool,
    /// The backend sent a FATAL error and is closing: forward it, then end the session as
    /// PostgreSQL would.
    backend_fatal: bool,
}

impl Session {
    fn new(
        shared: Arc<Shared>,
        client: Stream,
        cbuf: BytesMut,
        login: Login,
        pool: Pool,
        key: PoolKey,
        cancel: CancelSlot,
    ) -> Self {
        let mode = shared.config.pool_mode;
        let max_message = shared.config.max_message_bytes;
        Self {
            shared,
            client,
            cbuf,
            to_client: BytesMut::with_capacity(16 * 1024),
            to_backend: BytesMut::with_capacity(4 * 1024),
            backend: None,
            pool,
            key,
            mode,
            max_message,
            pending: Pending::default(),
            tx: TxStatus::Idle,
            in_copy: false,
            client_skip: false,
            statements: HashMap::new(),
            settings: login.settings,
            unnamed_kind: StatementKind::Other,
            cancel,
            round_started: None,
            draining: false,
            backend_fatal: false,
        }
    }

    /// No transaction open and no reply outstanding: the backend could be handed back now.
    fn between_transactions(&self) -> bool {
        self.pending.is_empty() && self.tx == TxStatus::Idle && !self.in_copy && !self.client_skip
    }

    fn transaction_mode(&self) -> bool {
        self.mode == PoolMode::Transaction
    }

    async fn serve(&mut self, mut shutdown: broadcast::Receiver<()>) -> Result<(), End> {
        enum Event {
            Client(std::io::Result<usize>),
            Backend(std::io::Result<usize>),
            Shutdown,
        }
        loop {
            self.flush().await?;
            if self.draining && (self.backend.is_none() || self.between_transactions()) {
                return Err(End::Fatal(ClientError::fatal(
                    "shutdown",
                    sqlstate::ADMIN_SHUTDOWN,
                    "terminating connection due to administrator command",
                )));
            }
            if self.cbuf.capacity() - self.cbuf.len() < 4096 {
                self.cbuf.reserve(8 * 1024);
            }
            let draining = self.draining;
            // Cancel safety: `read_buf` on a TCP or TLS stream loses nothing when the other
            // branch wins; bytes read so far stay in the buffer.
            let event = match self.backend.as_mut() {
                None => tokio::select! {
                    r = self.client.read_buf(&mut self.cbuf) => Event::Client(r),
                    _ = shutdown.recv(), if !draining => Event::Shutdown,
                },
                Some(b) => {
                    let b = &mut **b;
                    if b.rbuf.capacity() - b.rbuf.len() < 4096 {
                        b.rbuf.reserve(16 * 1024);
                    }
                    tokio::select! {
                        r = self.client.read_buf(&mut self.cbuf) => Event::Client(r),
                        r = b.stream.read_buf(&mut b.rbuf) => Event::Backend(r),
                        _ = shutdown.recv(), if !draining => Event::Shutdown,
                    }
                }
            };
            match event {
                Event::Shutdown => self.draining = true,
                Event::Client(Ok(0)) | Event::Client(Err(_)) => return Err(End::ClientGone),
                Event::Client(Ok(_)) => {
                    if self.on_client_data().await? {
                        return Ok(());
                    }
                }
                Event::Backend(Ok(0)) | Event::Backend(Err(_)) => {
                    let shard = self.shared.pools.shard_name(self.key.shard).to_owned();
                    return Err(End::Fatal(ClientError::fatal(
                        "backend_lost",
                        sqlstate::CONNECTION_FAILURE,
                        format!("pg-router: lost connection to shard {shard}"),
                    )));
                }
                Event::Backend(Ok(_)) => {
                    self.on_backend_data()?;
                    if self.backend_fatal {
                        self.flush().await?;
                        if let Some(b) = self.backend.take() {
                            drop(Pooled::take(b));
                        }
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn flush(&mut self) -> Result<(), End> {
        if !self.to_backend.is_empty() {
            if let Some(b) = self.backend.as_mut() {
                if b.stream.write_all(&self.to_backend).await.is_err() {
                    let shard = self.shared.pools.shard_name(self.key.shard).to_owned();
                    return Err(End::Fatal(ClientError::fatal(
                        "backend_lost",
                        sqlstate::CONNECTION_FAILURE,
                        format!("pg-router: lost connection to shard {shard}"),
                    )));
                }
            }
            self.to_backend.clear();
        }
        if !self.to_client.is_empty() {
            self.client.write_all(&self.to_client).await.map_err(|_| End::ClientGone)?;
            self.to_client.clear();
        }
        Ok(())
    }

    /// Handles every whole frame the client sent. Returns true when the client said Terminate.
    async fn on_client_data(&mut self) -> Result<bool, End> {
        loop {
            let frame = match frame::next_frame(&mut self.cbuf, self.max_message) {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(false),
                Err(e) => {
                    let code = match e {
                        frame::FrameError::TooLarge { .. } => sqlstate::PROGRAM_LIMIT_EXCEEDED,
                        _ => sqlstate::PROTOCOL_VIOLATION,
                    };
                    return Err(End::Fatal(ClientError::fatal("protocol", code, e.to_string())));
                }
            };
            if frame.tag == tag::TERMINATE {
                return Ok(true);
            }
            if self.client_skip && frame.tag != tag::SYNC {
                continue;
            }
            self.on_client_frame(frame).await?;
        }
    }

    async fn on_client_frame(&mut self, frame: Frame) -> Result<(), End> {
        match frame.tag {
            tag::QUERY => self.on_query(frame).await,
            tag::PARSE => self.on_parse(frame).await,
            tag::BIND => self.on_bind(frame).await,
            tag::DESCRIBE => self.on_describe(frame).await,
            tag::CLOSE => self.on_close(frame).await,
            tag::EXECUTE => self.forward(frame, Some(Expect::Execute)).await,
            tag::SYNC => {
                self.client_skip = false;
                if self.backend.is_none() {
                    let mut out = BytesMut::new();
                    backend::ready_for_query(&mut out, TxStatus::Idle);
                    self.synthetic(out.freeze());
                    Ok(())
                } else {
                    self.forward(frame, Some(Expect::Sync)).await
                }
            }
            tag::FLUSH => {
                if self.backend.is_some() {
                    self.to_backend.extend_from_slice(&frame.bytes);
                }
                Ok(())
            }
            tag::COPY_DATA => {
                // Outside COPY PostgreSQL ignores these; without a backend there is no COPY.
                if self.backend.is_some() {
                    self.to_backend.extend_from_slice(&frame.bytes);
                }
                Ok(())
            }
            tag::COPY_DONE | tag::COPY_FAIL => {
                if self.backend.is_some() {
                    self.to_backend.extend_from_slice(&frame.bytes);
                    self.expect(Expect::CopyEnd);
                }
                Ok(())
            }
            tag::FUNCTION_CALL => self.forward(frame, Some(Expect::Query)).await,
            // Anything else goes through untouched; the backend answers or rejects it.
            _ => self.forward(frame, None).await,
        }
    }

    /// Forwards a frame to the backend (checking one out if needed) and records its reply.
    async fn forward(&mut self, frame: Frame, expect: Option<Expect>) -> Result<(), End> {
        let extended = !matches!(expect, Some(Expect::Query));
        if let Err(e) = self.ensure_backend().await {
            self.refuse(e, extended);
            return Ok(());
        }
        self.to_backend.extend_from_slice(&frame.bytes);
        if let Some(e) = expect {
            self.expect(e);
        }
        Ok(())
    }

    fn expect(&mut self, e: Expect) {
        if self.pending.is_empty() && self.round_started.is_none() {
            self.round_started = Some(Instant::now());
        }
        if let Some(undone) = self.pending.push(e) {
            self.undo(undone);
        }
    }

    /// Queues bytes made up by the router, in order with the backend's replies.
    fn synthetic(&mut self, bytes: Bytes) {
        self.pending.push(Expect::Synthetic(bytes));
        while let Some(b) = self.pending.pop_synthetic() {
            self.to_client.extend_from_slice(&b);
        }
    }

    /// Reports an error for a message the router will not forward. In the simple protocol the
    /// client also gets ReadyForQuery; in the extended protocol messages up to Sync are dropped.
    fn refuse(&mut self, e: ClientError, extended: bool) {
        self.shared.metrics.error(e.kind());
        let mut out = BytesMut::new();
        e.encode(&mut out);
        if extended {
            self.client_skip = true;
        } else {
            let status = if self.backend.is_some() { self.tx } else { TxStatus::Idle };
            backend::ready_for_query(&mut out, status);
        }
        self.synthetic(out.freeze());
    }

    async fn on_query(&mut self, frame: Frame) -> Result<(), End> {
        let text = match frontend::query_text(&frame) {
            Ok(t) => t,
            Err(e) => return Err(End::Fatal(ClientError::protocol(e.to_string()))),
        };
        let (kind, effects) = classify(text);
        self.shared.metrics.statement(kind);
        if let Some(reason) = self.unsupported(&effects) {
            if self.backend.is_some() && self.tx != TxStatus::Idle {
                // Inside a transaction the refusal must abort it, as any error would on
                // PostgreSQL: have the backend raise it.
                let sql = raise_sql(sqlstate::FEATURE_NOT_SUPPORTED, reason);
                let mut out = BytesMut::new();
                frontend::encode_query(&mut out, &sql);
                let f = Frame { tag: tag::QUERY, bytes: out.freeze() };
                return self.forward(f, Some(Expect::Query)).await;
            }
            self.refuse(unsupported_error(reason), false);
            return Ok(());
        }
        self.forward(frame, Some(Expect::Query)).await?;
        self.apply_effects(effects);
        Ok(())
    }

    fn unsupported(&self, effects: &[SessionEffect]) -> Option<&'static str> {
        if !self.transaction_mode() {
            return None;
        }
        effects.iter().find_map(|e| match e {
            SessionEffect::Unsupported(r) => Some(*r),
            _ => None,
        })
    }

    /// Mirrors a statement's effect on session state into the router's tracking.
    fn apply_effects(&mut self, effects: Vec<SessionEffect>) {
        if effects.is_empty() || !self.transaction_mode() {
            return;
        }
        let Some(b) = self.backend.as_mut() else { return };
        for e in effects {
            match e {
                SessionEffect::Set { name, value } => {
                    b.settings.insert(name.clone(), value.clone());
                    self.settings.insert(name, value);
                }
                SessionEffect::Reset { name } => {
                    b.settings.remove(&name);
                    self.settings.remove(&name);
                }
                SessionEffect::ResetAll => {
                    b.settings.clear();
                    self.settings.clear();
                }
                SessionEffect::Discard { settings } => {
                    self.statements.clear();
                    b.prepared.clear();
                    if settings {
                        b.settings.clear();
                        self.settings.clear();
                    }
                    b.needs_reset = true;
                }
                SessionEffect::Dirty => b.needs_reset = true,
                SessionEffect::None | SessionEffect::Unsupported(_) => {}
            }
        }
    }

    async fn on_parse(&mut self, frame: Frame) -> Result<(), End> {
        let parse = Parse::decode(&frame).map_err(|e| ClientError::protocol(e.to_string()))?;
        if parse.name.is_empty() || !self.transaction_mode() {
            let (kind, effects) = classify(parse.query);
            self.unnamed_kind = kind;
            if let Some(reason) = self.unsupported(&effects) {
                self.refuse(unsupported_error(reason), true);
                return Ok(());
            }
            self.forward(frame.clone(), Some(Expect::Parse { def: None, client_name: None, hide: false }))
                .await?;
            self.apply_effects(effects);
            return Ok(());
        }
        let def = self.shared.statements.intern(parse.query, parse.param_types);
        if let Some(reason) = self.unsupported(&def.effects) {
            self.refuse(unsupported_error(reason), true);
            return Ok(());
        }
        if let Some(existing) = self.statements.get(parse.name).cloned() {
            // PostgreSQL refuses to redefine a statement (42P05); let the backend say so by
            // parsing again under the existing statement's global name.
            if let Err(e) = self.ensure_prepared(&existing).await {
                self.refuse(e, true);
                return Ok(());
            }
            let mut out = BytesMut::new();
            frontend::encode_parse(&mut out, &existing.name, &existing.query, &existing.param_types);
            self.to_backend.extend_from_slice(&out);
            self.expect(Expect::Parse { def: None, client_name: None, hide: false });
            return Ok(());
        }
        if let Err(e) = self.ensure_backend().await {
            self.refuse(e, true);
            return Ok(());
        }
        let name = parse.name.to_owned();
        self.statements.insert(name.clone(), def.clone());
        let b = self.backend_mut();
        if b.prepared.contains(&def.id) {
            let mut out = BytesMut::new();
            backend::parse_complete(&mut out);
            self.synthetic(out.freeze());
        } else {
            b.prepared.insert(def.id);
            let mut out = BytesMut::new();
            frontend::encode_parse(&mut out, &def.name, &def.query, &def.param_types);
            self.to_backend.extend_from_slice(&out);
            self.expect(Expect::Parse { def: Some(def.clone()), client_name: Some(name), hide: false });
        }
        let effects = def.effects.clone();
        self.apply_effects(effects);
        Ok(())
    }

    /// Checks out a backend if needed and makes sure `def` is prepared on it, injecting a
    /// hidden Parse if not.
    async fn ensure_prepared(&mut self, def: &Arc<StatementDef>) -> Result<(), ClientError> {
        self.ensure_backend().await?;
        let b = self.backend_mut();
        if !b.prepared.insert(def.id) {
            return Ok(());
        }
        let mut out = BytesMut::new();
        frontend::encode_parse(&mut out, &def.name, &def.query, &def.param_types);
        self.to_backend.extend_from_slice(&out);
        self.expect(Expect::Parse { def: Some(def.clone()), client_name: None, hide: true });
        Ok(())
    }

    async fn on_bind(&mut self, frame: Frame) -> Result<(), End> {
        let bind = Bind::decode(&frame).map_err(|e| ClientError::protocol(e.to_string()))?;
        let def = if bind.statement.is_empty() || !self.transaction_mode() {
            None
        } else {
            self.statements.get(bind.statement).cloned()
        };
        let Some(def) = def else {
            // The unnamed statement, session mode, or an unknown name (the backend reports
            // 26000 with the client's own name).
            self.shared.metrics.statement(self.unnamed_kind);
            return self.forward(frame, Some(Expect::Bind)).await;
        };
        self.shared.metrics.statement(def.kind);
        if let Err(e) = self.ensure_prepared(&def).await {
            self.refuse(e, true);
            return Ok(());
        }
        let renamed = bind.with_statement(&def.name);
        self.to_backend.extend_from_slice(&renamed);
        self.expect(Expect::Bind);
        Ok(())
    }

    async fn on_describe(&mut self, frame: Frame) -> Result<(), End> {
        let d = DescribeOrClose::decode(&frame).map_err(|e| ClientError::protocol(e.to_string()))?;
        let def = match d.target {
            Target::Statement if !d.name.is_empty() && self.transaction_mode() => {
                self.statements.get(d.name).cloned()
            }
            _ => None,
        };
        let Some(def) = def else {
            return self.forward(frame, Some(Expect::Describe)).await;
        };
        if let Err(e) = self.ensure_prepared(&def).await {
            self.refuse(e, true);
            return Ok(());
        }
        let mut out = BytesMut::new();
        frontend::encode_statement_target(&mut out, tag::DESCRIBE, &def.name);
        self.to_backend.extend_from_slice(&out);
        self.expect(Expect::Describe);
        Ok(())
    }

    async fn on_close(&mut self, frame: Frame) -> Result<(), End> {
        let c = DescribeOrClose::decode(&frame).map_err(|e| ClientError::protocol(e.to_string()))?;
        let named_statement = c.target == Target::Statement && !c.name.is_empty() && self.transaction_mode();
        if named_statement || self.backend.is_none() {
            // Global statements stay prepared on backends for other clients; closing a portal
            // or statement that no backend holds is a no-op in PostgreSQL too.
            if named_statement {
                self.statements.remove(c.name);
            }
            let mut out = BytesMut::new();
            backend::close_complete(&mut out);
            self.synthetic(out.freeze());
            return Ok(());
        }
        self.forward(frame, Some(Expect::Close)).await
    }

    fn backend_mut(&mut self) -> &mut crate::pool::BackendConn {
        match self.backend.as_mut() {
            Some(b) => b,
            None => unreachable!("ensure_backend succeeded before"),
        }
    }

    /// Checks out a backend for this transaction and brings its session settings in line
    /// with the client's.
    async fn ensure_backend(&mut self) -> Result<(), ClientError> {
        if self.backend.is_some() {
            return Ok(());
        }
        let mut conn = self.shared.pools.checkout(&self.pool, &self.key).await.map_err(checkout_error)?;
        self.shared.metrics.transactions.increment(1);
        if conn.settings != self.settings {
            let sql = settings_sql(&conn.settings, &self.settings);
            if let Err(e) = conn.run_internal(&sql).await {
                // The client's setting is invalid on the shard (or the shard failed): drop the
                // connection and forget the settings so the next statement can run.
                let _ = Pooled::take(conn);
                self.settings.clear();
                return Err(
                    backend_error(e).with_hint("The session settings were reset to the server defaults.")
                );
            }
            conn.settings = self.settings.clone();
        }
        self.backend = Some(conn);
        self.set_cancel_target();
        Ok(())
    }

    fn set_cancel_target(&self) {
        if let Ok(mut slot) = self.cancel.lock() {
            *slot = self.backend.as_ref().map(|b| b.cancel);
        }
    }

    fn on_backend_data(&mut self) -> Result<(), End> {
        let Some(b) = self.backend.as_mut() else { return Ok(()) };
        let mut undone = Vec::new();
        let mut pos = 0;
        loop {
            let header = match peek_header(&b.rbuf[pos..], PG_MAX_MESSAGE_LEN) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    return Err(End::Fatal(ClientError::fatal(
                        "backend_protocol",
                        sqlstate::PROTOCOL_VIOLATION,
                        format!("pg-router: invalid message from shard {}: {e}", b.shard),
                    )))
                }
            };
            let (t, len) = header;
            let have = b.rbuf.len() - pos;
            if have < len {
                b.rbuf.reserve(len - have);
                break;
            }
            let msg = &b.rbuf[pos..pos + len];
            match t {
                btag::READY_FOR_QUERY => {
                    self.tx = msg.get(5).and_then(|&s| TxStatus::from_byte(s)).unwrap_or(TxStatus::Failed);
                    self.in_copy = false;
                }
                btag::COPY_IN_RESPONSE | btag::COPY_OUT_RESPONSE | btag::COPY_BOTH_RESPONSE => {
                    self.in_copy = true
                }
                btag::COMMAND_COMPLETE => self.in_copy = false,
                btag::ERROR_RESPONSE => {
                    self.in_copy = false;
                    if backend::is_fatal(&msg[frame::HEADER_LEN..]) {
                        self.backend_fatal = true;
                    }
                }
                _ => {}
            }
            if self.pending.on_backend(t, &mut undone) == Disposition::Forward {
                self.to_client.extend_from_slice(msg);
            }
            while let Some(s) = self.pending.pop_synthetic() {
                self.to_client.extend_from_slice(&s);
            }
            pos += len;
        }
        b.rbuf.advance(pos);
        for u in undone {
            self.undo(u);
        }
        if self.backend_fatal {
            return Ok(());
        }
        if self.pending.is_empty() {
            if let Some(start) = self.round_started.take() {
                self.shared.metrics.query_seconds.record(start.elapsed().as_secs_f64());
            }
            if self.transaction_mode() && self.between_transactions() {
                self.backend = None;
                self.set_cancel_target();
            }
        }
        Ok(())
    }

    /// Forgets a Parse that did not take effect on the backend.
    fn undo(&mut self, u: UndoneParse) {
        if let Some(b) = self.backend.as_mut() {
            b.prepared.remove(&u.def.id);
        }
        if let Some(name) = u.client_name {
            if self.statements.get(&name).is_some_and(|d| d.id == u.def.id) {
                self.statements.remove(&name);
            }
        }
    }

    /// Returns the backend to the pool if it is idle and clean, or closes it: closing makes
    /// PostgreSQL roll back an open transaction and release its locks.
    fn close_backend(&mut self) {
        let Some(mut b) = self.backend.take() else { return };
        self.set_cancel_target();
        if !self.between_transactions() {
            drop(Pooled::take(b));
            return;
        }
        if self.mode == PoolMode::Session {
            b.needs_reset = true;
        }
    }
}

fn unsupported_error(reason: &'static str) -> ClientError {
    ClientError::new("unsupported", sqlstate::FEATURE_NOT_SUPPORTED, reason)
}

/// SQL that makes the backend raise an error with this code and message.
fn raise_sql(code: &str, message: &str) -> String {
    format!(
        "DO $pgr$ BEGIN RAISE EXCEPTION USING ERRCODE = '{code}', MESSAGE = '{}'; END $pgr$",
        message.replace('\'', "''")
    )
}

/// SQL that turns a backend's session settings `from` into `to`.
fn settings_sql(from: &BTreeMap<String, String>, to: &BTreeMap<String, String>) -> String {
    let mut sql = String::new();
    for name in from.keys().filter(|k| !to.contains_key(*k)) {
        sql.push_str(&format!("RESET \"{}\";", name.replace('"', "\"\"")));
    }
    for (name, value) in to {
        if from.get(name) != Some(value) {
            sql.push_str(&format!("SET \"{}\" = {};", name.replace('"', "\"\""), value));
        }
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_diff() {
        let from: BTreeMap<_, _> = [("a".to_string(), "1".to_string()), ("b".into(), "2".into())].into();
        let to: BTreeMap<_, _> = [("b".to_string(), "3".to_string()), ("c".into(), "'x'".into())].into();
        assert_eq!(settings_sql(&from, &to), "RESET \"a\";SET \"b\" = 3;SET \"c\" = 'x';");
        assert_eq!(
            raise_sql("0A000", "it's"),
            "DO $pgr$ BEGIN RAISE EXCEPTION USING ERRCODE = '0A000', MESSAGE = 'it''s'; END $pgr$"
        );
    }
}
