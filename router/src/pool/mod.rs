//! Backend connection pools, one per (shard, database, user).
//!
//! [`bounded::Pool`] provides the bounded size, the checkout queue and timeout, and the
//! recycle hook. The hook is where connections are checked before reuse: past their lifetime
//! they are dropped, dirty ones (session state changed) are reset with `DISCARD ALL`, and ones
//! idle for longer than `health_check_after_idle` are pinged. A reaper task closes idle
//! connections and keeps `min_size` warm.

pub mod bounded;
pub mod conn;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bounded::{Manage, PoolError};

pub use conn::{
    unix_socket_path, BackendAddr, BackendConn, BackendError, CancelTarget, ConnectParams, Settings,
};

use crate::config::{PoolConfig, ShardConfig};

/// The key of one pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub shard: usize,
    pub database: Arc<str>,
    pub user: Arc<str>,
}

pub struct Manager {
    params: ConnectParams,
    config: PoolConfig,
    /// The shard's startup ParameterStatus values, learned from the first connection.
    server_params: Mutex<Option<Vec<(String, String)>>>,
}

impl Manage for Manager {
    /// Boxed: a connection moves between the idle list, checkouts and sessions on every
    /// transaction, and a pointer moves cheaper than the whole struct.
    type Conn = Box<BackendConn>;
    type Error = BackendError;

    async fn create(&self) -> Result<Box<BackendConn>, BackendError> {
        let started = Instant::now();
        let conn = BackendConn::connect(&self.params).await;
        metrics::histogram!("pg_router_backend_connect_seconds").record(started.elapsed().as_secs_f64());
        let conn = conn?;
        if let Ok(mut guard) = self.server_params.lock() {
            guard.get_or_insert_with(|| conn.server_params.clone());
        }
        Ok(Box::new(conn))
    }

    fn reusable_as_is(&self, conn: &Box<BackendConn>, idle_for: Duration, now: Instant) -> bool {
        // What `recycle` returns true for without running anything.
        !conn.needs_reset
            && idle_for <= self.config.health_check_after_idle
            && now.saturating_duration_since(conn.created) <= self.config.max_lifetime
    }

    async fn recycle(&self, conn: &mut Box<BackendConn>, idle_for: Duration, now: Instant) -> bool {
        if now.saturating_duration_since(conn.created) > self.config.max_lifetime {
            tracing::debug!(shard = %conn.shard, "closing a backend connection past pool.max_lifetime_ms");
            return false;
        }
        let sql = if conn.needs_reset {
            "DISCARD ALL"
        } else if idle_for > self.config.health_check_after_idle {
            ";"
        } else {
            return true;
        };
        match crate::timer::timeout(self.config.connect_timeout, conn.run_internal(sql)).await {
            Ok(Ok(())) => {
                if conn.needs_reset {
                    conn.prepared.clear();
                    conn.settings = Settings::default();
                    conn.needs_reset = false;
                }
                true
            }
            Ok(Err(e)) => {
                tracing::debug!(shard = %conn.shard, error = %e, "closing a backend connection that failed {sql}");
                false
            }
            Err(_) => {
                tracing::debug!(shard = %conn.shard, "closing a backend connection that did not answer {sql}");
                false
            }
        }
    }
}

pub type Pool = bounded::Pool<Manager>;
pub type Pooled = bounded::Pooled<Manager>;

/// Why a checkout failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("timed out after {waited_ms} ms waiting for a connection to shard {shard} (pool.max_size = {max_size})")]
    Timeout { shard: String, waited_ms: u128, max_size: usize },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// All pools of the router, created on first use.
pub struct Pools {
    /// Backend endpoints by index, append-only: the config's `[[shards]]` first, then endpoints
    /// the control plane adds or moves (an index handed out stays valid for sessions that hold
    /// an older topology).
    shards: RwLock<Vec<EndpointEntry>>,
    config: PoolConfig,
    pools: RwLock<HashMap<PoolKey, Pool>>,
    /// Endpoints the newest topology no longer uses: a shard moved away from the address, or
    /// left the shard map. Their pools keep no idle connection (see [`Pools::retire_unused`]).
    retired: RwLock<HashSet<usize>>,
    checkout_seconds: metrics::Histogram,
}

/// One backend endpoint and its TLS client config.
#[derive(Clone)]
struct EndpointEntry {
    shard: Arc<ShardConfig>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Pools {
    pub fn new(
        shards: Vec<ShardConfig>,
        tls: Vec<Option<Arc<rustls::ClientConfig>>>,
        config: PoolConfig,
    ) -> Self {
        let shards = shards
            .into_iter()
            .zip(tls.into_iter().chain(std::iter::repeat(None)))
            .map(|(shard, tls)| EndpointEntry { shard: Arc::new(shard), tls })
            .collect();
        Self {
            shards: RwLock::new(shards),
            config,
            pools: RwLock::new(HashMap::new()),
            retired: RwLock::new(HashSet::new()),
            checkout_seconds: metrics::histogram!("pg_router_pool_checkout_seconds"),
        }
    }

    fn entry(&self, shard: usize) -> Option<EndpointEntry> {
        let shards = self.shards.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        shards.get(shard).cloned()
    }

    /// The shard name of an endpoint.
    pub fn shard_name(&self, shard: usize) -> String {
        self.entry(shard).map(|e| e.shard.name.clone()).unwrap_or_else(|| format!("#{shard}"))
    }

    /// How many endpoints exist (indexes are below this).
    pub fn len(&self) -> usize {
        self.shards.read().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The endpoint index of shard `name` at `host:port`, added if no endpoint has that name and
    /// address yet. A shard the config file lists keeps its TLS settings and database at a new
    /// address; any other shard is reached without TLS, in the client's database.
    pub fn endpoint_for(&self, name: &str, host: &str, port: u16) -> usize {
        let mut shards = self.shards.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(i) =
            shards.iter().position(|e| e.shard.name == name && e.shard.host == host && e.shard.port == port)
        {
            return i;
        }
        let template = shards.iter().find(|e| e.shard.name == name).cloned();
        let (tls, tls_ca_file, database, client_tls) = match template {
            Some(t) => (t.shard.tls, t.shard.tls_ca_file.clone(), t.shard.database.clone(), t.tls.clone()),
            None => (crate::config::BackendTls::Disable, None, None, None),
        };
        let shard =
            ShardConfig { name: name.to_owned(), host: host.to_owned(), port, tls, tls_ca_file, database };
        tracing::info!(shard = name, host, port, "new shard endpoint from the control plane");
        shards.push(EndpointEntry { shard: Arc::new(shard), tls: client_tls });
        shards.len() - 1
    }

    /// Retires every endpoint but `current`, the ones the newest topology uses. A retired
    /// endpoint's pool closes its idle connections at the next maintenance tick and opens none
    /// to keep `pool.min_size` warm: nothing stays connected to a shard's old server once the
    /// sessions still on an older topology have finished their transactions there. An endpoint
    /// that comes back into use (a shard moved back) is current again.
    pub fn retire_unused(&self, current: impl IntoIterator<Item = usize>) {
        let current: HashSet<usize> = current.into_iter().collect();
        let retired: HashSet<usize> = (0..self.len()).filter(|i| !current.contains(i)).collect();
        *self.retired.write().unwrap_or_else(std::sync::PoisonError::into_inner) = retired;
    }

    fn is_retired(&self, shard: usize) -> bool {
        self.retired.read().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&shard)
    }

    /// The pool for `key`, created on first use; `None` if its endpoint does not exist.
    pub fn pool(&self, key: &PoolKey, password: Option<&str>) -> Option<Pool> {
        if let Some(p) = self.pools.read().ok().and_then(|m| m.get(key).cloned()) {
            return Some(p);
        }
        let EndpointEntry { shard, tls } = self.entry(key.shard)?;
        let mut map = match self.pools.write() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let pool = map
            .entry(key.clone())
            .or_insert_with(|| {
                let manager = Manager {
                    params: ConnectParams {
                        shard: shard.name.clone(),
                        host: shard.host.clone(),
                        port: shard.port,
                        database: shard.database.clone().unwrap_or_else(|| key.database.to_string()),
                        user: key.user.to_string(),
                        password: password.map(str::to_owned),
                        tls,
                        connect_timeout: self.config.connect_timeout,
                    },
                    config: self.config.clone(),
                    server_params: Mutex::new(None),
                };
                Pool::new(manager, self.config.max_size)
            })
            .clone();
        Some(pool)
    }

    /// An idle connection ready as it is, without waiting: the common checkout. `None` when
    /// [`Pools::checkout`] has work to do (open, reset, health-check, or wait).
    pub fn try_checkout(&self, pool: &Pool, now: Instant) -> Option<Pooled> {
        let conn = pool.try_get(now)?;
        self.checkout_seconds.record(0.0);
        Some(conn)
    }

    /// Checks a connection out of `pool`, mapping pool errors to ones a client can be shown;
    /// `now` is the caller's reading of the clock.
    pub async fn checkout(&self, pool: &Pool, key: &PoolKey, now: Instant) -> Result<Pooled, CheckoutError> {
        let mut get = std::pin::pin!(pool.get_at(self.config.checkout_timeout, now));
        // The common case, an idle connection, is ready at once and costs no clock read: it
        // waited zero seconds. Anything slower is timed from here.
        let first = std::future::poll_fn(|cx| std::task::Poll::Ready(get.as_mut().poll(cx))).await;
        let (res, started) = match first {
            std::task::Poll::Ready(res) => {
                self.checkout_seconds.record(0.0);
                (res, None)
            }
            std::task::Poll::Pending => {
                let started = Instant::now();
                let res = get.await;
                self.checkout_seconds.record(started.elapsed().as_secs_f64());
                (res, Some(started))
            }
        };
        res.map_err(|e| match e {
            PoolError::Timeout => CheckoutError::Timeout {
                shard: self.shard_name(key.shard),
                waited_ms: started.map_or(0, |s| s.elapsed().as_millis()),
                max_size: self.config.max_size,
            },
            PoolError::Create(b) => CheckoutError::Backend(b),
        })
    }

    /// The shard's startup parameters, once a connection has been made.
    pub fn server_params(pool: &Pool) -> Option<Vec<(String, String)>> {
        pool.manager().server_params.lock().ok().and_then(|g| g.clone())
    }

    /// Closes idle connections past `idle_timeout` (all of them on a retired endpoint), keeps
    /// `min_size` warm, and publishes pool gauges. Runs until the process ends.
    pub async fn maintain(self: Arc<Self>) {
        let mut tick = crate::timer::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let pools: Vec<(PoolKey, Pool)> = match self.pools.read() {
                Ok(m) => m.iter().map(|(k, p)| (k.clone(), p.clone())).collect(),
                Err(_) => continue,
            };
            // A moved shard has a pool per address under one shard name: its gauges are the sum.
            let mut gauges: HashMap<(String, Arc<str>, Arc<str>), bounded::Status> = HashMap::new();
            for (key, pool) in pools {
                let (idle_timeout, max_lifetime) = (self.config.idle_timeout, self.config.max_lifetime);
                if self.is_retired(key.shard) {
                    pool.evict(0, |_, _| true);
                } else {
                    let min = self.config.min_size;
                    pool.evict(min, |conn, idle_for| {
                        idle_for >= idle_timeout || conn.created.elapsed() > max_lifetime
                    });
                    if pool.status().size < min {
                        let pool = pool.clone();
                        tokio::spawn(async move { while let Ok(true) = pool.fill_to(min).await {} });
                    }
                }
                let status = pool.status();
                let sum = gauges.entry((self.shard_name(key.shard), key.database, key.user)).or_default();
                sum.size += status.size;
                sum.idle += status.idle;
                sum.waiting += status.waiting;
            }
            for ((shard, database, user), status) in gauges {
                let labels =
                    [("shard", shard), ("database", database.to_string()), ("user", user.to_string())];
                metrics::gauge!("pg_router_pool_size", &labels).set(status.size as f64);
                metrics::gauge!("pg_router_pool_in_use", &labels)
                    .set(status.size.saturating_sub(status.idle) as f64);
                metrics::gauge!("pg_router_pool_waiting", &labels).set(status.waiting as f64);
            }
        }
    }
}
