//! The `pg-router` binary.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use router::server::SPARE_DESCRIPTORS;

#[derive(Parser)]
#[command(name = "pg-router", version, about = "A sharding proxy that speaks the PostgreSQL wire protocol")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the router.
    Serve {
        /// Path to the TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file and exit.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run one node of a control cluster (HA mode; routers use `[control] mode = "remote"`).
    Control(router::admin::ControlArgs),
    /// Administer the control plane: show and change the VSchema, shards and members.
    Ctl(router::admin::CtlArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PG_ROUTER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        // Colour only on a terminal: a log file or journal gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    match Cli::parse().command {
        Command::CheckConfig { config } => {
            load(&config)?;
            println!("{}: ok", config.display());
            Ok(())
        }
        Command::Serve { config } => {
            let config = load(&config)?;
            raise_open_files_limit(router::server::descriptors_needed(&config));
            router::timer::session_runtime(config.worker_threads)?.block_on(serve(config))
        }
        Command::Control(args) => {
            raise_open_files_limit(control::api::ApiLimits::default().max_connections + SPARE_DESCRIPTORS);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(router::admin::run_control(args, shutdown_signal()))
        }
        Command::Ctl(args) => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            if let Err(e) = rt.block_on(router::admin::run_ctl(args)) {
                // A message for the operator, not a backtrace.
                eprintln!("error: {e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

/// Raises the soft limit on open files (`ulimit -n`) to the hard limit: every client and every
/// backend connection is a socket, and a soft limit of 1024, common for services, is below what
/// the default `server.max_client_connections` and the pools open. Warns when even the hard
/// limit is below `needed`, since clients past it would fail with "too many open files" instead
/// of being served or refused with 53300.
fn raise_open_files_limit(needed: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < needed as u64 => tracing::warn!(
            limit,
            needed,
            "the open-file limit (ulimit -n, hard) is below what this configuration may open at once; raise it"
        ),
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<router::config::Config> {
    let raw = router::config::RawConfig::from_file(path)?;
    Ok(raw.validate()?)
}

async fn serve(config: router::config::Config) -> anyhow::Result<()> {
    if let Some(addr) = config.metrics_listen {
        router::metrics::install(addr).context("starting the metrics endpoint")?;
        tracing::info!(%addr, "serving Prometheus metrics at /metrics");
    }
    let listen = config.listen;
    let shared = router::server::shared(config)?;
    let control = router::control::start(shared.clone()).await?;
    let listener =
        tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    tracing::info!(%listen, "pg-router listening");
    router::server::serve(listener, shared, shutdown_signal()).await;
    if let Some(c) = control {
        c.shutdown().await;
    }
    tracing::info!("pg-router stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install SIGTERM handler");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown signal received");
}
