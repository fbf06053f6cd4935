//! Prometheus metrics. Handles for the per-statement metrics are created once, so the hot path
//! pays an atomic add, not a registry lookup.

use std::net::SocketAddr;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

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

/// Installs the global recorder and serves `/metrics` on `addr`, from the background runtime.
pub fn install(addr: SocketAddr) -> anyhow::Result<()> {
    let _in = crate::timer::background().enter();
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets(&[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])?
        .install()?;
    Ok(())
}
