//! The accept loop and graceful shutdown.
//!
//! A semaphore caps client connections; a broadcast tells sessions to stop; every session holds
//! a clone of an mpsc sender, so the server knows all sessions are gone when `recv()` returns
//! `None` (the mini-redis pattern). On shutdown the listener closes at once, idle sessions end
//! with 57P01, and sessions inside a transaction may finish it until `shutdown_timeout`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, Semaphore};

use crate::cancel::CancelRegistry;
use crate::config::{BackendTls, Config, ControlConfig};
use crate::error::{sqlstate, ClientError};
use crate::metrics::Metrics;
use crate::pool::Pools;
use crate::session::{self, statements::StatementRegistry, Shared};
use crate::topology::{Topology, TopologyHandle};

/// Builds the shared state from a validated config. Metrics handles bind to the recorder
/// installed at this point, so install the exporter first.
pub fn shared(config: Config) -> anyhow::Result<Arc<Shared>> {
    let tls = match &config.tls {
        Some(t) => {
            Some(tokio_rustls::TlsAcceptor::from(crate::tls::server_config(&t.cert_file, &t.key_file)?))
        }
        None => None,
    };
    let mut backend_tls = Vec::new();
    for s in &config.shards {
        backend_tls.push(match (s.tls, &s.tls_ca_file) {
            (BackendTls::Require, Some(ca)) => Some(crate::tls::client_config(ca)?),
            _ => None,
        });
    }
    let pools = Arc::new(Pools::new(config.shards.clone(), backend_tls, config.pool.clone()));
    let endpoints = config.shards.iter().enumerate().map(|(i, s)| (s.name.clone(), i)).collect();
    let topology = Topology::new(&config.routing, endpoints)
        .map_err(|e| anyhow::anyhow!("invalid routing configuration: {e}"))?;
    Ok(Arc::new(Shared {
        config: Arc::new(config),
        pools,
        cancels: CancelRegistry::default(),
        statements: StatementRegistry::default(),
        tls,
        metrics: Metrics::new(),
        topology: TopologyHandle::new(topology),
        last_login_settings: Default::default(),
    }))
}

/// File descriptors the process holds besides sockets: listeners, the metrics endpoint, log and
/// control-store files.
pub const SPARE_DESCRIPTORS: usize = 64;

/// How many file descriptors `config` may need at once: a socket per client and per backend
/// connection the pools may open to the shards the config names, the control API's connections
/// when the control node is embedded, the metrics endpoint's, and [`SPARE_DESCRIPTORS`].
pub fn descriptors_needed(config: &Config) -> usize {
    let pools = config.shards.len() * config.databases.len().max(1) * config.users.len().max(1);
    let control = match config.control {
        ControlConfig::Embedded { .. } => control::api::ApiLimits::default().max_connections,
        _ => 0,
    };
    let metrics = match config.metrics_listen {
        Some(_) => crate::metrics::ENDPOINT_LIMITS.max_connections,
        None => 0,
    };
    config.max_client_connections + pools * config.pool.max_size + control + metrics + SPARE_DESCRIPTORS
}

/// Serves clients on `listener` until `stop` completes, then drains.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: impl Future<Output = ()>) {
    let (notify_shutdown, _) = broadcast::channel::<()>(1);
    let shutdown_raised = Arc::new(AtomicBool::new(false));
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let limit = Arc::new(Semaphore::new(shared.config.max_client_connections));
    tokio::spawn(shared.pools.clone().maintain());
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut stop => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                crate::timer::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tokio::spawn(refuse_too_many(tcp));
            continue;
        };
        tracing::debug!(%peer, "client connected");
        let shared = shared.clone();
        let shutdown =
            session::Shutdown { notice: notify_shutdown.subscribe(), raised: shutdown_raised.clone() };
        let done = done_tx.clone();
        tokio::spawn(async move {
            session::run(tcp, shared, shutdown).await;
            drop(permit);
            drop(done);
        });
    }
    drop(listener);
    tracing::info!("shutting down: no new connections; waiting for open transactions");
    shutdown_raised.store(true, Ordering::Release);
    let _ = notify_shutdown.send(());
    drop(done_tx);
    if crate::timer::timeout(shared.config.shutdown_timeout, done_rx.recv()).await.is_err() {
        tracing::warn!("shutdown timeout reached; closing remaining connections");
    }
}

/// Answers a client over `max_client_connections` with 53300, as PostgreSQL does. The startup
/// packet is not read: the error is sent as soon as the connection arrives.
async fn refuse_too_many(mut tcp: tokio::net::TcpStream) {
    let e = ClientError::fatal(
        "too_many_clients",
        sqlstate::TOO_MANY_CONNECTIONS,
        "sorry, too many clients already",
    );
    let mut out = BytesMut::new();
    e.encode(&mut out);
    // A client that starts with SSLRequest reads one byte first: 'E' makes libpq read the
    // error that follows (as it does for PostgreSQL's own early errors).
    let _ = tcp.write_all(&out).await;
    let _ = tcp.shutdown().await;
}
