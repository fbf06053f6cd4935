//! Prometheus metrics. Handles for the per-statement metrics are created once, so the hot path
//! pays an atomic add, not a registry lookup.

use std::net::SocketAddr;
use std::time::Duration;

use control::http::{error, ApiLimits, Body, Method, StatusCode};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Request, Response};
use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::session::classify::StatementKind;

pub struct Metrics {
    pub clients: Gauge,
    pub statements: [Counter; StatementKind::ALL.len()],
    pub query_seconds: Histogram,
    pub transactions: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            clients: gauge!("pg_router_client_connections"),
            statements: StatementKind::ALL
                .map(|k| counter!("pg_router_statements_total", "type" => k.label())),
            query_seconds: histogram!("pg_router_query_duration_seconds"),
            transactions: counter!("pg_router_backend_checkouts_total"),
        }
    }

    pub fn statement(&self, kind: StatementKind) {
        self.statements[kind as usize].increment(1);
    }

    /// Counts an error shown to a client, by kind.
    pub fn error(&self, kind: &'static str) {
        counter!("pg_router_errors_total", "kind" => kind).increment(1);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The metrics endpoint's connection limits: a few scrapers at a time is its whole load.
pub const ENDPOINT_LIMITS: ApiLimits = ApiLimits {
    max_connections: 16,
    header_read_timeout: Duration::from_secs(10),
    body_read_timeout: Duration::from_secs(10),
};

/// How often histograms are folded into their summaries, as the exporter's own listener did.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the global recorder and serves `GET /metrics` on `addr` from the background
/// runtime, within [`ENDPOINT_LIMITS`] (it shares the process's file descriptors with the
/// router's clients). Fails when `addr` cannot be bound.
pub fn install(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let handle = PrometheusBuilder::new()
        .set_buckets(&[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])?
        .install_recorder()?;
    let runtime = crate::timer::background();
    let listener = {
        let _in = runtime.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    let upkeep = handle.clone();
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(UPKEEP_EVERY).await;
            upkeep.run_upkeep();
        }
    });
    runtime.spawn(control::http::serve(
        listener,
        ENDPOINT_LIMITS,
        "metrics endpoint",
        std::future::pending(),
        move |req, _peer| std::future::ready(answer(&handle, &req)),
    ));
    Ok(())
}

fn answer(handle: &PrometheusHandle, req: &Request<Incoming>) -> Response<Body> {
    if req.uri().path() != "/metrics" {
        return error(StatusCode::NOT_FOUND, "not found: metrics are at /metrics");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "/metrics answers GET");
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let mut r = Response::new(Body::Whole(Some(handle.render().into())));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    r
}
