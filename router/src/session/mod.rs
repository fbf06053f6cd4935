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
mod copy;
mod extended;
mod fast_path;
pub mod login;
mod lookup;
pub mod pending;
mod savepoints;
mod shards;
mod simple;
pub mod statements;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;

use crate::cancel::{CancelRegistry, CancelSlot};
use crate::config::{Config, PoolMode};
use crate::error::{sqlstate, ClientError};
use crate::metrics::Metrics;
use crate::pool::{BackendError, CheckoutError, Pool, PoolKey, Pooled, Pools, Settings};
use crate::protocol::backend::{self, tag as btag, TxStatus};
use crate::protocol::frame::{self, peek_header, PG_MAX_MESSAGE_LEN};
use crate::protocol::frontend::{self, tag, DecodeError, Parse};
use crate::protocol::Frame;
use crate::stream::Stream;
use crate::topology::{Endpoint, Topology, TopologyHandle};
use classify::{SessionEffect, StatementKind};
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
    pub topology: TopologyHandle,
    /// The settings the last client logged in with: a client with the same ones shares them
    /// (see [`Settings`]).
    pub last_login_settings: std::sync::Mutex<Settings>,
}

impl Shared {
    fn login_settings(&self, map: BTreeMap<String, String>) -> Settings {
        let Ok(mut last) = self.last_login_settings.lock() else { return Settings::new(map) };
        if **last != map {
            *last = Settings::new(map);
        }
        last.clone()
    }
}

/// How the server tells sessions it is stopping: `raised` is set before the broadcast is sent,
/// so a session can tell with one atomic load whether the broadcast needs polling.
pub struct Shutdown {
    pub notice: broadcast::Receiver<()>,
    pub raised: Arc<AtomicBool>,
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
pub async fn run(tcp: TcpStream, shared: Arc<Shared>, shutdown: Shutdown) {
    let _ = tcp.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let opened =
        crate::timer::timeout(shared.config.login_timeout, login::open(tcp, &shared, &mut buf)).await;
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
    let greeted = crate::timer::timeout(
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
    let cancel = shared.cancels.register();
    let mut s = Session::new(shared.clone(), stream, buf, session);
    s.cancel = cancel.slot.clone();
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
    s.close_backends();
}

async fn report_fatal(shared: &Shared, stream: &mut Stream, e: &ClientError) {
    shared.metrics.error(e.kind());
    tracing::info!(kind = e.kind(), code = %e.code, "closing client: {}", e.message);
    let mut out = BytesMut::new();
    e.encode(&mut out);
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

/// What `greet` hands over: the login, the default endpoint's pool, and (session pooling) the
/// backend held for the whole session.
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
    // The greeting's ParameterStatus values come from the default shard (all shards run the
    // same server version and settings).
    let key = PoolKey {
        shard: shared.topology.get().default_endpoint(),
        database: login.database.as_str().into(),
        user: user.backend_user.as_str().into(),
    };
    let Some(pool) = shared.pools.pool(&key, user.backend_password.as_deref()) else {
        return Err(ClientError::new(
            "routing",
            sqlstate::INTERNAL_ERROR,
            "pg-router: the default shard has no endpoint",
        ));
    };
    let mut held = None;
    if shared.config.pool_mode == PoolMode::Session || Pools::server_params(&pool).is_none() {
        let conn = shared.pools.checkout(&pool, &key, Instant::now()).await.map_err(checkout_error)?;
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
    }
}

fn backend_error(e: BackendError) -> ClientError {
    match &e {
        BackendError::Server { code, message, .. } => {
            // Keep the shard's own SQLSTATE (3D000, 28P01, 53300, ...) so clients react as they
            // would to PostgreSQL.
            ClientError::new("backend_login", sqlstate::CANNOT_CONNECT, format!("pg-router: {e}"))
                .with_code(code.clone())
                .with_detail(format!("The shard reported: {message}"))
        }
        _ => ClientError::new("backend_connect", sqlstate::CANNOT_CONNECT, format!("pg-router: {e}")),
    }
}

/// A shard's failure on a statement of the router's own: the shard's error with its SQLSTATE
/// and `detail` (which may name the shard as `{shard}`), or 08006 when the connection failed.
fn own_statement_error(e: BackendError, kind: &'static str, detail: &str) -> ClientError {
    match e {
        BackendError::Server { code, message, shard } => {
            ClientError::new(kind, sqlstate::INTERNAL_ERROR, message)
                .with_code(code)
                .with_detail(detail.replace("{shard}", &shard))
        }
        other => {
            ClientError::new("backend_lost", sqlstate::CONNECTION_FAILURE, format!("pg-router: {other}"))
        }
    }
}

/// The unnamed prepared statement, kept so it can be parsed again on another shard.
struct Unnamed {
    text: Arc<UnnamedText>,
    /// (endpoint, backend pid) it is currently parsed on.
    parsed_on: Option<(Endpoint, i32)>,
}

/// One unnamed-statement text and what the router learned of it.
struct UnnamedText {
    query: Arc<str>,
    param_types: Bytes,
    kind: StatementKind,
    effects: Vec<SessionEffect>,
    plan: statements::PlanSlot,
}

impl UnnamedText {
    fn is(&self, query: &[u8], param_types: &[u8]) -> bool {
        self.query.len() == query.len() && self.query.as_bytes() == query && *self.param_types == *param_types
    }
}

/// The last few unnamed-statement texts of a session. Drivers cycle through a handful of
/// statements (pgbench's tpcb-like script has seven), sending each as a new unnamed Parse: a
/// text seen before is recognised by its bytes, without another UTF-8 check, classification
/// or copy. Long texts are not kept, so a session holds at most
/// `RECENT_TEXTS * RECENT_TEXT_MAX` bytes here.
#[derive(Default)]
struct RecentTexts(std::collections::VecDeque<Arc<UnnamedText>>);

const RECENT_TEXTS: usize = 8;
const RECENT_TEXT_MAX: usize = 4096;

impl RecentTexts {
    fn find(&self, query: &[u8], param_types: &[u8]) -> Option<&Arc<UnnamedText>> {
        self.0.iter().find(|t| t.is(query, param_types))
    }

    /// The text of an unnamed Parse: the current unnamed statement's (`current`), one of the
    /// recent texts, or classified now and remembered.
    fn text_of(
        &mut self,
        current: Option<&Unnamed>,
        parse: &Parse<'_>,
    ) -> Result<Arc<UnnamedText>, DecodeError> {
        if let Some(u) = current {
            if u.text.is(parse.query, parse.param_types) {
                return Ok(u.text.clone());
            }
        }
        if let Some(t) = self.find(parse.query, parse.param_types) {
            return Ok(t.clone());
        }
        let query = parse.text()?;
        let (kind, effects) = classify::classify(query);
        let text = Arc::new(UnnamedText {
            query: Arc::from(query),
            param_types: Bytes::copy_from_slice(parse.param_types),
            kind,
            effects,
            plan: Default::default(),
        });
        self.remember(&text);
        Ok(text)
    }

    fn remember(&mut self, text: &Arc<UnnamedText>) {
        if text.query.len() > RECENT_TEXT_MAX {
            return;
        }
        if self.0.len() == RECENT_TEXTS {
            self.0.pop_back();
        }
        self.0.push_front(text.clone());
    }
}

/// A Parse whose shard is not known yet: it is sent with the batch's first routed message.
enum Deferred {
    /// A named statement in transaction pooling (sent under its global name).
    Named { def: Arc<StatementDef>, client_name: String },
    /// The unnamed statement, or any Parse in session pooling: the client's frame unchanged.
    Raw(Frame),
}

struct Session {
    shared: Arc<Shared>,
    client: Stream,
    cbuf: BytesMut,
    to_client: BytesMut,
    to_backend: BytesMut,
    /// The backend frames are forwarded to; its replies are tracked in `pending`.
    backend: Option<Pooled>,
    /// The endpoint of `backend`.
    endpoint: Endpoint,
    /// Other backends this transaction (in session pooling: this session) holds. Idle: nothing
    /// is outstanding on them.
    others: Vec<(Endpoint, Pooled)>,
    /// Transactions of the router's own holding the lookup rows this transaction block added
    /// (one per lookup shard); they commit when the block commits (see [`lookup`]).
    lookup_tx: Vec<(Endpoint, Pooled)>,
    /// Pools for this client's database and backend user, per endpoint, made on first use.
    pools: Vec<Option<(Pool, PoolKey)>>,
    backend_password: Option<String>,
    /// The topology snapshot; refreshed only between transactions.
    topology: Arc<Topology>,
    /// The version of `topology` in `Shared::topology`.
    topology_version: u64,
    mode: PoolMode,
    max_message: usize,
    pending: Pending,
    /// Transaction status as the client sees it: the active backend's last ReadyForQuery, or
    /// the router's own after a lazy BEGIN or a multi-shard statement.
    tx: TxStatus,
    /// The open transaction block's BEGIN, replayed on every shard that joins it; None: a
    /// plain `BEGIN`.
    begin: Option<String>,
    /// The block's open savepoints, oldest first (see [`savepoints`]).
    savepoints: Vec<String>,
    /// A shard's part of the block was lost: only ROLLBACK can end it.
    block_lost: bool,
    /// Extended-protocol messages went to `backend` since its last Sync.
    unsynced: bool,
    in_copy: bool,
    /// A message was refused in the extended protocol: drop client messages up to Sync, as
    /// PostgreSQL does after an error.
    client_skip: bool,
    /// The client's named prepared statements.
    statements: foldhash::HashMap<String, Arc<StatementDef>>,
    unnamed: Option<Unnamed>,
    recent_texts: RecentTexts,
    deferred: Vec<Deferred>,
    /// Portals the router runs itself (cross-shard statements), by portal name.
    portals: foldhash::HashMap<String, extended::RouterPortal>,
    /// The shard each portal was bound on (a transaction may move between shards while a
    /// portal stays open on one of them).
    portal_shards: extended::PortalShards,
    /// Session settings to replay, as SQL text keyed by lower-case name.
    settings: Settings,
    unnamed_kind: StatementKind,
    cancel: CancelSlot,
    round_started: Option<Instant>,
    draining: bool,
    /// The backend sent a FATAL error and is closing: forward it, then end the session as
    /// PostgreSQL would.
    backend_fatal: bool,
    /// The active backend answered everything sent to it (a ReadyForQuery closed the last
    /// round) and has been sent nothing since: it owes no reply.
    backend_quiet: bool,
}

/// Why a routed step did not happen.
enum Stop {
    /// Report this error to the client; the session goes on.
    Refuse(ClientError),
    /// End the session.
    End(End),
}

impl From<End> for Stop {
    fn from(e: End) -> Self {
        Stop::End(e)
    }
}

impl From<ClientError> for Stop {
    fn from(e: ClientError) -> Self {
        if e.is_fatal() {
            Stop::End(End::Fatal(e))
        } else {
            Stop::Refuse(e)
        }
    }
}

impl Session {
    fn new(shared: Arc<Shared>, client: Stream, cbuf: BytesMut, greeting: Greeting) -> Self {
        let (login, pool, key, held) = greeting;
        let mode = shared.config.pool_mode;
        let max_message = shared.config.max_message_bytes;
        let settings = shared.login_settings(login.settings);
        // No version is `u64::MAX`: this reads the current topology and its version.
        let mut topology_version = u64::MAX;
        let topology = shared.topology.newer(&mut topology_version).unwrap_or_else(|| shared.topology.get());
        let backend_password = shared.config.users.get(&login.user).and_then(|u| u.backend_password.clone());
        let mut pools = vec![None; shared.pools.len().max(key.shard + 1)];
        let endpoint = key.shard;
        pools[endpoint] = Some((pool, key));
        let cancel = CancelSlot::default();
        Self {
            shared,
            client,
            cbuf,
            to_client: BytesMut::with_capacity(16 * 1024),
            to_backend: BytesMut::with_capacity(4 * 1024),
            backend: held,
            endpoint,
            others: Vec::new(),
            lookup_tx: Vec::new(),
            pools,
            backend_password,
            topology,
            topology_version,
            mode,
            max_message,
            pending: Pending::default(),
            tx: TxStatus::Idle,
            begin: None,
            savepoints: Vec::new(),
            block_lost: false,
            unsynced: false,
            in_copy: false,
            client_skip: false,
            statements: Default::default(),
            unnamed: None,
            recent_texts: RecentTexts::default(),
            deferred: Vec::new(),
            portals: Default::default(),
            portal_shards: extended::PortalShards::default(),
            settings,
            unnamed_kind: StatementKind::Other,
            cancel,
            round_started: None,
            draining: false,
            backend_fatal: false,
            backend_quiet: false,
        }
    }

    /// No transaction open and no reply outstanding: the backends could be handed back now.
    fn between_transactions(&self) -> bool {
        self.pending.is_empty()
            && self.tx == TxStatus::Idle
            && !self.in_copy
            && !self.client_skip
            && !self.unsynced
            && self.deferred.is_empty()
    }

    fn transaction_mode(&self) -> bool {
        self.mode == PoolMode::Transaction
    }

    /// Takes the current topology when no transaction pins the old one.
    fn refresh_topology(&mut self) {
        if self.backend.is_none() && self.others.is_empty() && self.tx == TxStatus::Idle {
            if let Some(current) = self.shared.topology.newer(&mut self.topology_version) {
                self.topology = current;
            }
        }
    }

    async fn serve(&mut self, shutdown: Shutdown) -> Result<(), End> {
        enum Event {
            Client(std::io::Result<usize>),
            Backend(std::io::Result<usize>),
            Shutdown,
        }
        let Shutdown { mut notice, raised } = shutdown;
        // One future for the whole session. Once polled, it stays registered with this task's
        // waker, so it is polled again only when `raised` says the notice was sent (one atomic
        // load per wait instead of a lock), and never after it fired (`draining`). It runs
        // outside tokio's cooperative budget: a budget-exhausted poll would return Pending
        // without registering, and the first poll must register.
        let mut notice = std::pin::pin!(tokio::task::unconstrained(notice.recv()));
        let mut armed = false;
        let mut client_wake = ClientWake::default();
        loop {
            self.flush().await?;
            let idle = self.backend.is_none() && self.others.is_empty();
            if self.draining && (idle || self.between_transactions()) {
                return Err(End::Fatal(ClientError::fatal(
                    "shutdown",
                    sqlstate::ADMIN_SHUTDOWN,
                    "terminating connection due to administrator command",
                )));
            }
            if self.cbuf.capacity() - self.cbuf.len() < 4096 {
                self.cbuf.reserve(8 * 1024);
            }
            if let Some(b) = self.backend.as_mut() {
                if b.rbuf.capacity() - b.rbuf.len() < 4096 {
                    b.rbuf.reserve(16 * 1024);
                }
            }
            let draining = self.draining;
            // In transaction mode a backend that owes no reply (idle inside the client's
            // transaction) has nothing to say until the next request: PostgreSQL sends nothing
            // unprompted then but a FATAL, which that request reads, as a direct client would.
            // Not watching it saves re-registering it after every reply. Session mode watches
            // all the time: notifications arrive unprompted.
            let watch_backend = !self.transaction_mode() || !self.backend_quiet || !self.pending.is_empty();
            let (backend, client, cbuf) = (&mut self.backend, &mut self.client, &mut self.cbuf);
            let wake = &mut client_wake;
            // Cancel safety: a `read_buf` that is not ready loses nothing; bytes read so far
            // stay in the buffer. Backend replies go first: a client that keeps sending
            // cannot hold them up.
            let event = std::future::poll_fn(|cx| {
                if let Some(b) = backend.as_mut().filter(|_| watch_backend) {
                    let b = &mut ***b;
                    if let Poll::Ready(r) = std::pin::pin!(b.stream.read_buf(&mut b.rbuf)).poll(cx) {
                        return Poll::Ready(Event::Backend(r));
                    }
                }
                if wake.must_poll(cx, client.is_tls()) {
                    let waker = wake.waker(cx);
                    let mut client_cx = Context::from_waker(waker);
                    match std::pin::pin!(client.read_buf(cbuf)).poll(&mut client_cx) {
                        Poll::Ready(r) => return Poll::Ready(Event::Client(r)),
                        Poll::Pending => wake.armed(),
                    }
                }
                if !draining && (!armed || raised.load(Ordering::Acquire)) {
                    armed = true;
                    if Pin::new(&mut notice).poll(cx).is_ready() {
                        return Poll::Ready(Event::Shutdown);
                    }
                }
                Poll::Pending
            })
            .await;
            if !matches!(event, Event::Backend(_)) {
                // Handling this may read from the client with another waker.
                client_wake.disarm();
            }
            match event {
                Event::Shutdown => self.draining = true,
                Event::Client(Ok(0)) | Event::Client(Err(_)) => return Err(End::ClientGone),
                Event::Client(Ok(_)) => {
                    if self.on_client_data().await? {
                        return Ok(());
                    }
                }
                Event::Backend(r) => {
                    self.on_backend_read(r)?;
                    if self.backend_fatal {
                        return self.end_after_backend_fatal().await;
                    }
                }
            }
        }
    }

    /// The backend said FATAL (already forwarded): end the session as PostgreSQL would.
    async fn end_after_backend_fatal(&mut self) -> Result<(), End> {
        self.flush().await?;
        if let Some(b) = self.backend.take() {
            drop(Pooled::take(b));
        }
        Ok(())
    }

    fn on_backend_read(&mut self, r: std::io::Result<usize>) -> Result<(), End> {
        match r {
            Ok(0) | Err(_) => Err(self.backend_lost()),
            Ok(_) => self.on_backend_data(),
        }
    }

    fn backend_lost(&self) -> End {
        let shard = self.shared.pools.shard_name(self.endpoint);
        End::Fatal(ClientError::fatal(
            "backend_lost",
            sqlstate::CONNECTION_FAILURE,
            format!("pg-router: lost connection to shard {shard}"),
        ))
    }

    async fn flush(&mut self) -> Result<(), End> {
        if !self.to_backend.is_empty() {
            if let Some(b) = self.backend.as_mut() {
                self.backend_quiet = false;
                if b.stream.send_all(&self.to_backend).await.is_err() {
                    return Err(self.backend_lost());
                }
            }
            self.to_backend.clear();
        }
        if !self.to_client.is_empty() {
            self.client.send_all(&self.to_client).await.map_err(|_| End::ClientGone)?;
            self.to_client.clear();
        }
        Ok(())
    }

    /// Handles every whole frame the client sent. Returns true when the client said Terminate.
    async fn on_client_data(&mut self) -> Result<bool, End> {
        loop {
            if self.pass_query()? || self.pass_batch()? {
                continue;
            }
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
                // PostgreSQL runs and answers what came before Terminate, so statements a
                // client pipelined ahead of it must reach the shard. An extended-protocol batch
                // without its Sync is left alone: PostgreSQL rolls it back at Terminate, as
                // closing the backend connection does here.
                if !self.unsynced && !self.pending.is_empty() {
                    self.drain().await?;
                    // The replies go out if the client still reads; it may not.
                    let _ = self.flush().await;
                }
                return Ok(true);
            }
            if self.client_skip && frame.tag != tag::SYNC {
                continue;
            }
            self.on_client_frame(frame).await?;
            if self.backend_fatal {
                self.end_after_backend_fatal().await?;
                return Ok(true);
            }
        }
    }

    async fn on_client_frame(&mut self, frame: Frame) -> Result<(), End> {
        if matches!(frame.tag, tag::DESCRIBE | tag::EXECUTE) && self.forward_to_active(&frame)? {
            return Ok(());
        }
        match frame.tag {
            tag::QUERY => self.on_query(frame).await,
            tag::PARSE => self.on_parse(frame).await,
            tag::BIND => self.on_bind(frame).await,
            tag::DESCRIBE => self.on_describe(frame).await,
            tag::CLOSE => self.on_close(frame).await,
            tag::EXECUTE => self.on_execute(frame).await,
            tag::SYNC => self.on_sync(frame).await,
            tag::FLUSH => self.on_flush(frame).await,
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
            tag::FUNCTION_CALL => self.forward_any(frame, Some(Expect::Query)).await,
            // Anything else goes through untouched; the backend answers or rejects it.
            _ => self.forward_any(frame, None).await,
        }
    }

    /// Forwards a frame that carries no routing information to the backend the session holds,
    /// or to the default shard.
    async fn forward_any(&mut self, frame: Frame, expect: Option<Expect>) -> Result<(), End> {
        let extended = !matches!(expect, Some(Expect::Query));
        let endpoint = self.preferred();
        if !self.enter(endpoint, extended).await? {
            return Ok(());
        }
        self.send(&frame.bytes, expect);
        Ok(())
    }

    /// Queues bytes for the active backend and records the reply they expect.
    fn send(&mut self, bytes: &[u8], expect: Option<Expect>) {
        self.to_backend.extend_from_slice(bytes);
        if let Some(e) = expect {
            self.sent(e);
        }
    }

    /// Records the reply expected for a message just queued for the active backend.
    fn sent(&mut self, e: Expect) {
        if e.is_extended() {
            self.unsynced = !matches!(e, Expect::Sync | Expect::Batch);
        }
        self.expect(e);
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
    ///
    /// Any error inside a transaction aborts it on PostgreSQL. When a backend is serving the
    /// batch (an explicit transaction, or an implicit one with work not yet synced), the
    /// backend itself raises the error in the extended protocol, so its transaction aborts and
    /// it skips to Sync exactly as the client does. Otherwise a transaction block is marked
    /// failed (and a later COMMIT rolls back).
    fn refuse(&mut self, e: ClientError, extended: bool) {
        self.shared.metrics.error(e.kind());
        if extended && self.backend.is_some() && (self.tx != TxStatus::Idle || self.unsynced) {
            let mut out = BytesMut::new();
            frontend::encode_parse(&mut out, "", &raise_sql(&e.code, &e.message), &[0, 0]);
            self.send(&out, Some(Expect::Parse { def: None, client_name: None, hide: true }));
            out.clear();
            frontend::encode_bind(&mut out, "", "", &[], &[], &[]);
            self.send(&out, Some(Expect::HiddenBind));
            out.clear();
            frontend::encode_execute(&mut out, "", 0);
            self.send(&out, Some(Expect::Execute));
            if let Some(u) = self.unnamed.as_mut() {
                u.parsed_on = None;
            }
            self.client_skip = true;
            return;
        }
        if self.tx == TxStatus::InTransaction {
            self.tx = TxStatus::Failed;
        }
        let mut out = BytesMut::new();
        e.encode(&mut out);
        if extended {
            self.client_skip = true;
        } else {
            backend::ready_for_query(&mut out, self.tx);
        }
        self.synthetic(out.freeze());
    }

    /// Mirrors a statement's effect on session state into the router's tracking.
    fn apply_effects(&mut self, effects: &[SessionEffect]) {
        if effects.is_empty() || !self.transaction_mode() {
            return;
        }
        let Some(b) = self.backend.as_mut() else { return };
        for e in effects {
            match e {
                SessionEffect::Set { name, value } => {
                    b.settings.make_mut().insert(name.clone(), value.clone());
                    self.settings.make_mut().insert(name.clone(), value.clone());
                }
                SessionEffect::Reset { name } => {
                    b.settings.make_mut().remove(name);
                    self.settings.make_mut().remove(name);
                }
                SessionEffect::ResetAll => {
                    b.settings = Settings::default();
                    self.settings = Settings::default();
                }
                SessionEffect::Discard { settings } => {
                    self.statements.clear();
                    b.prepared.clear();
                    if *settings {
                        b.settings = Settings::default();
                        self.settings = Settings::default();
                    }
                    b.needs_reset = true;
                }
                SessionEffect::Dirty => b.needs_reset = true,
                SessionEffect::None | SessionEffect::Unsupported(_) => {}
            }
        }
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

    fn set_cancel_target(&self) {
        if let Ok(mut slot) = self.cancel.lock() {
            slot.clear();
            slot.extend(self.backend.iter().map(|b| b.cancel.clone()));
        }
    }

    fn on_backend_data(&mut self) -> Result<(), End> {
        let Some(b) = self.backend.as_mut() else { return Ok(()) };
        let mut undone = Vec::new();
        let mut pos = 0;
        // Messages from here to `pos` go to the client; they are copied in one piece when the
        // run ends (a hidden message, a made-up one to slot in, or the end of the buffer).
        let mut run_from = 0;
        let mut saw_ready = false;
        loop {
            if self.pending.forwards_until_ready() {
                pos = past_plain_replies(&b.rbuf, pos, self.in_copy);
            }
            let header = match peek_header(&b.rbuf[pos..], PG_MAX_MESSAGE_LEN) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    // What came before the bad message still reaches the client.
                    self.to_client.extend_from_slice(&b.rbuf[run_from..pos]);
                    return Err(End::Fatal(ClientError::fatal(
                        "backend_protocol",
                        sqlstate::PROTOCOL_VIOLATION,
                        format!("pg-router: invalid message from shard {}: {e}", b.shard),
                    )));
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
                    saw_ready = true;
                    self.tx = msg.get(5).and_then(|&s| TxStatus::from_byte(s)).unwrap_or(TxStatus::Failed);
                    self.in_copy = false;
                    // A block opened without the router's knowing its BEGIN (one that went
                    // through as it came) is joined with a plain BEGIN: `begin` stays None.
                    if self.tx == TxStatus::Idle {
                        self.begin = None;
                        self.savepoints.clear();
                        self.block_lost = false;
                    }
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
            let expected = self.pending.len();
            if self.pending.on_backend(t, &mut undone) == Disposition::Hide {
                self.to_client.extend_from_slice(&b.rbuf[run_from..pos]);
                run_from = pos + len;
            }
            pos += len;
            // Made-up replies go out when they reach the front, which only happens when this
            // message completed an entry.
            if self.pending.len() == expected || !self.pending.synthetic_at_front() {
                continue;
            }
            if let Some(s) = self.pending.pop_synthetic() {
                self.to_client.extend_from_slice(&b.rbuf[run_from..pos]);
                run_from = pos;
                self.to_client.extend_from_slice(&s);
                while let Some(s) = self.pending.pop_synthetic() {
                    self.to_client.extend_from_slice(&s);
                }
            }
        }
        self.to_client.extend_from_slice(&b.rbuf[run_from..pos]);
        b.rbuf.advance(pos);
        for u in undone {
            self.undo(u);
        }
        if self.backend_fatal {
            return Ok(());
        }
        if self.pending.is_empty() {
            self.backend_quiet = saw_ready;
            let now = self.round_started.take().map(|start| {
                let now = Instant::now();
                self.shared.metrics.query_seconds.record(now.saturating_duration_since(start).as_secs_f64());
                now
            });
            if self.transaction_mode() && self.between_transactions() {
                self.release_all(now);
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

    /// Returns the backends to their pools if they are idle and clean, or closes them:
    /// closing makes PostgreSQL roll back an open transaction and release its locks.
    fn close_backends(&mut self) {
        self.drop_lookup_tx();
        let clean = self.between_transactions();
        let session_mode = self.mode == PoolMode::Session;
        let active = self.backend.take().map(|b| (self.endpoint, b));
        for (_, mut b) in active.into_iter().chain(self.others.drain(..)) {
            if !clean {
                drop(Pooled::take(b));
            } else if session_mode {
                b.needs_reset = true;
            }
        }
        self.set_cancel_target();
    }
}

/// Where the run of whole backend messages from `pos` on ends that need no look but at their
/// tag: rows, descriptions, completions, notices. It stops at what changes the session's
/// state or the pending queue's (ReadyForQuery, an error, the start of a COPY or, in copy mode,
/// its end), at a header [`peek_header`] would refuse, and at a message not wholly read.
fn past_plain_replies(buf: &[u8], mut pos: usize, in_copy: bool) -> usize {
    while let Some(h) = buf.get(pos..pos + frame::HEADER_LEN) {
        let t = h[0];
        let len = i32::from_be_bytes([h[1], h[2], h[3], h[4]]);
        if len < 4 || len as usize > PG_MAX_MESSAGE_LEN {
            break;
        }
        let end = pos + 1 + len as usize;
        let special = matches!(
            t,
            btag::READY_FOR_QUERY
                | btag::ERROR_RESPONSE
                | btag::COPY_IN_RESPONSE
                | btag::COPY_OUT_RESPONSE
                | btag::COPY_BOTH_RESPONSE
        ) || (in_copy && t == btag::COMMAND_COMPLETE);
        if special || end > buf.len() {
            break;
        }
        pos = end;
    }
    pos
}

/// Which wake-ups came from the client socket, so that the session loop reads the client only
/// when it may have something, instead of after every backend reply too.
///
/// The client is read with a waker of its own that notes the wake-up before waking the task.
/// Once a read has returned `Pending`, the socket holds that waker until readiness arrives;
/// until the waker fires, reading again would find nothing (and cost a readiness check and a
/// re-registration), so the loop skips it. The skip is only sound while nothing else reads
/// the client with another waker: the loop disarms after every event that is not a backend
/// reply (whose handling never reads the client), and TLS clients, whose writes may poll the
/// socket underneath, are always read.
#[derive(Default)]
struct ClientWake {
    /// The flag and the waker made from it; rebuilt if the task's waker changes.
    current: Option<(Arc<ClientWakeFlag>, Waker)>,
    /// A read returned `Pending` with the current waker, and the waker has not fired since.
    armed: bool,
}

struct ClientWakeFlag {
    fired: AtomicBool,
    task: Waker,
}

impl Wake for ClientWakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

impl ClientWake {
    /// Whether the client must be read in this poll of the task.
    fn must_poll(&mut self, cx: &Context<'_>, tls: bool) -> bool {
        match &self.current {
            Some((flag, _)) if flag.task.will_wake(cx.waker()) => {
                tls || !self.armed || flag.fired.swap(false, Ordering::AcqRel)
            }
            _ => {
                let flag =
                    Arc::new(ClientWakeFlag { fired: AtomicBool::new(false), task: cx.waker().clone() });
                self.current = Some((flag.clone(), Waker::from(flag)));
                true
            }
        }
    }

    /// The waker to read the client with; `must_poll` made it.
    fn waker<'a>(&'a self, cx: &'a Context<'_>) -> &'a Waker {
        self.current.as_ref().map_or(cx.waker(), |(_, w)| w)
    }

    fn armed(&mut self) {
        self.armed = true;
    }

    fn disarm(&mut self) {
        self.armed = false;
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
    fn plain_replies_are_passed_up_to_what_needs_a_look() {
        let msg = |t: u8, body: &[u8]| {
            let mut m = vec![t];
            m.extend_from_slice(&(4 + body.len() as i32).to_be_bytes());
            m.extend_from_slice(body);
            m
        };
        let rows = [msg(b'T', b"desc"), msg(b'D', b"row1"), msg(b'D', b"row2")].concat();
        let complete = msg(b'C', b"SELECT 2\0");
        let ready = msg(b'Z', b"I");
        let buf = [rows.clone(), complete.clone(), ready.clone()].concat();
        assert_eq!(past_plain_replies(&buf, 0, false), rows.len() + complete.len());
        assert_eq!(past_plain_replies(&buf, 0, true), rows.len(), "in copy mode CommandComplete ends it");
        let error = [rows.clone(), msg(b'E', b"SERROR\0\0")].concat();
        assert_eq!(past_plain_replies(&error, 0, false), rows.len());
        let copy = [rows.clone(), msg(b'G', &[0, 0, 0])].concat();
        assert_eq!(past_plain_replies(&copy, 0, false), rows.len());
        // A message not wholly read, and a length PostgreSQL never sends.
        assert_eq!(past_plain_replies(&buf[..rows.len() + 3], 0, false), rows.len());
        let bad = [rows.clone(), vec![b'D', 0, 0, 0, 2]].concat();
        assert_eq!(past_plain_replies(&bad, 0, false), rows.len());
        assert_eq!(past_plain_replies(&buf, rows.len() + complete.len(), false), rows.len() + complete.len());
    }

    #[test]
    fn the_client_is_read_again_only_after_its_own_wake_up() {
        struct Task(std::sync::atomic::AtomicUsize);
        impl Wake for Task {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let task = Arc::new(Task(Default::default()));
        let task_waker = Waker::from(task.clone());
        let cx = Context::from_waker(&task_waker);
        let mut w = ClientWake::default();
        assert!(w.must_poll(&cx, false), "never read: read");
        w.armed();
        assert!(!w.must_poll(&cx, false), "registered and not fired: skip");
        // The socket wakes the client's waker: the task wakes and the next poll reads.
        w.waker(&cx).wake_by_ref();
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        assert!(w.must_poll(&cx, false), "fired: read");
        w.armed();
        assert!(!w.must_poll(&cx, false));
        w.disarm();
        assert!(w.must_poll(&cx, false), "disarmed (another reader may have registered): read");
        w.armed();
        assert!(w.must_poll(&cx, true), "TLS: always read");
        // Polled with another task waker: a new flag, and a read.
        let other = Waker::from(Arc::new(Task(Default::default())));
        assert!(w.must_poll(&Context::from_waker(&other), false));
        w.armed();
        assert!(!w.must_poll(&Context::from_waker(&other), false));
    }

    fn text(query: &str, param_types: &'static [u8]) -> Arc<UnnamedText> {
        let (kind, effects) = classify::classify(query);
        Arc::new(UnnamedText {
            query: query.into(),
            param_types: Bytes::from_static(param_types),
            kind,
            effects,
            plan: Default::default(),
        })
    }

    #[test]
    fn recent_texts_are_found_by_text_and_parameter_types_and_stay_bounded() {
        let mut recent = RecentTexts::default();
        recent.remember(&text("select $1", &[0, 1, 0, 0, 0, 23]));
        assert!(recent.find(b"select $1", &[0, 1, 0, 0, 0, 23]).is_some());
        // Same text, other parameter types: another statement.
        assert!(recent.find(b"select $1", &[0, 1, 0, 0, 0, 25]).is_none());
        assert!(recent.find(b"select $2", &[0, 1, 0, 0, 0, 23]).is_none());
        // The oldest text leaves when the list is full.
        for i in 0..RECENT_TEXTS {
            recent.remember(&text(&format!("select {i}"), &[0, 0]));
        }
        assert!(recent.find(b"select $1", &[0, 1, 0, 0, 0, 23]).is_none());
        assert!(recent.find(b"select 0", &[0, 0]).is_some());
        assert_eq!(recent.0.len(), RECENT_TEXTS);
        // A long text is not kept.
        let long = format!("select '{}'", "x".repeat(RECENT_TEXT_MAX));
        recent.remember(&text(&long, &[0, 0]));
        assert!(recent.find(long.as_bytes(), &[0, 0]).is_none());
        assert!(recent.find(b"select 0", &[0, 0]).is_some());
    }

    #[test]
    fn settings_are_shared_until_changed() {
        let map: BTreeMap<_, _> = [("application_name".to_string(), "'a'".to_string())].into();
        let a = Settings::new(map.clone());
        let mut b = a.clone();
        assert_eq!(a, b);
        assert_eq!(a, Settings::new(map), "equal maps are equal settings");
        b.make_mut().insert("search_path".into(), "'s'".into());
        assert_ne!(a, b);
        assert_eq!(a.len(), 1, "the shared map was copied, not changed");
        assert_eq!(settings_sql(&a, &b), "SET \"search_path\" = 's';");
    }

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
