//! Configuration: the TOML file as written ([`RawConfig`]) and the checked form the router runs
//! with ([`Config`]). Every field is documented in the README's configuration reference; unknown
//! fields are refused, and `validate()` names the offending field.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::auth::UserAuth;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("invalid config: {field}: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.into(), reason: reason.into() }
}

/// The config file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    pub tls: Option<RawTls>,
    pub metrics: Option<RawMetrics>,
    #[serde(default)]
    pub pool: RawPool,
    /// Databases clients may connect to; each must exist on every shard.
    pub databases: Vec<String>,
    #[serde(default)]
    pub users: Vec<RawUser>,
    #[serde(default)]
    pub shards: Vec<RawShard>,
    #[serde(default)]
    pub routing: RawRouting,
    /// Keyspaces, tables and vindexes (the vindex crate's VSchema document). Without it, every
    /// table lives in one unsharded keyspace `default` on the first shard.
    pub vschema: Option<vindex::VSchema>,
    /// Which `[[shards]]` own which key ranges of each keyspace (the vindex crate's shard map
    /// document; shard names are `[[shards]]` names). Required with `vschema`.
    pub shard_map: Option<vindex::ShardMapDoc>,
    /// The control plane: where the VSchema and shard map live once the router runs.
    #[serde(default)]
    pub control: RawControl,
}

/// Where the router's routing documents live after start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlMode {
    /// A single-node control store inside the router, in `data_dir` (the default).
    #[default]
    Embedded,
    /// Follow an external control cluster (`pg-router control` nodes) at `endpoints`.
    Remote,
    /// No control plane: the config file's VSchema and shard map, fixed for the process lifetime.
    Off,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawControl {
    pub mode: ControlMode,
    /// Embedded: the control store's directory (created if missing; one router per directory).
    pub data_dir: PathBuf,
    /// Embedded: address of the control API (admin API and `pg-router ctl`).
    pub listen: String,
    /// Embedded: the Raft node id.
    pub node_id: u64,
    /// Bearer token for control API writes. Without a token the API refuses all writes.
    pub token: Option<String>,
    /// Name of an environment variable holding the token (instead of `token`).
    pub token_env: Option<String>,
    /// Remote: control node API addresses (`host:port`), tried in turn.
    pub endpoints: Vec<String>,
    /// How this router is listed in the control store (default: `server.listen`).
    pub router_id: Option<String>,
    /// Remote: how long to wait at start for the first routing version.
    pub startup_timeout_ms: u64,
}

impl Default for RawControl {
    fn default() -> Self {
        Self {
            mode: ControlMode::Embedded,
            data_dir: PathBuf::from("pg-router-data"),
            listen: "127.0.0.1:7432".to_owned(),
            node_id: 1,
            token: None,
            token_env: None,
            endpoints: Vec::new(),
            router_id: None,
            startup_timeout_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRouting {
    /// Keyspace of tables the VSchema does not list; must be unsharded.
    pub default_keyspace: Option<String>,
    /// Rows a cross-shard statement may hold in memory when its shape needs buffering.
    pub max_buffered_rows: usize,
    /// Distinct statement texts whose plans are cached.
    pub plan_cache_size: usize,
}

impl Default for RawRouting {
    fn default() -> Self {
        Self { default_keyspace: None, max_buffered_rows: 100_000, plan_cache_size: 4096 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: String,
    pub max_client_connections: usize,
    pub pool_mode: PoolMode,
    pub max_message_bytes: usize,
    pub shutdown_timeout_ms: u64,
    pub login_timeout_ms: u64,
    /// Threads serving connections; 0 means one per CPU. 1 runs a single-threaded event loop,
    /// which spends the least CPU per transaction.
    pub worker_threads: usize,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:6432".into(),
            max_client_connections: 1000,
            pool_mode: PoolMode::Transaction,
            max_message_bytes: 64 << 20,
            shutdown_timeout_ms: 30_000,
            login_timeout_ms: 15_000,
            worker_threads: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// A backend connection serves one transaction, then returns to the pool.
    Transaction,
    /// A backend connection stays with its client until the client disconnects.
    Session,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    #[serde(default)]
    pub require: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub listen: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPool {
    pub min_size: usize,
    pub max_size: usize,
    pub connect_timeout_ms: u64,
    pub checkout_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub max_lifetime_ms: u64,
    pub health_check_after_idle_ms: u64,
}

impl Default for RawPool {
    fn default() -> Self {
        Self {
            min_size: 0,
            max_size: 20,
            connect_timeout_ms: 5_000,
            checkout_timeout_ms: 5_000,
            idle_timeout_ms: 600_000,
            max_lifetime_ms: 3_600_000,
            health_check_after_idle_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    #[default]
    ScramSha256,
    Md5,
    Trust,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    pub name: String,
    /// Cleartext, a `SCRAM-SHA-256$...` verifier or an `md5...` hash (as in `pg_authid`).
    pub password: Option<String>,
    #[serde(default)]
    pub auth: AuthMethod,
    /// Role used on the shards; defaults to `name`.
    pub backend_user: Option<String>,
    /// Password used on the shards; defaults to `password` when that is cleartext.
    pub backend_password: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendTls {
    #[default]
    Disable,
    Require,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShard {
    pub name: String,
    pub host: String,
    pub port: u16,
    #[serde(default)]
    pub tls: BackendTls,
    /// PEM CA bundle used to verify the shard's certificate when `tls = "require"`.
    pub tls_ca_file: Option<PathBuf>,
    /// The database on the shard's server that holds this shard (default: the database the
    /// client asked for). Lets several shards live in one PostgreSQL server.
    pub database: Option<String>,
}

/// The validated configuration the router runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub max_client_connections: usize,
    pub pool_mode: PoolMode,
    pub max_message_bytes: usize,
    pub shutdown_timeout: Duration,
    pub login_timeout: Duration,
    pub worker_threads: usize,
    pub tls: Option<RawTls>,
    pub metrics_listen: Option<SocketAddr>,
    pub pool: PoolConfig,
    pub databases: BTreeSet<String>,
    pub users: HashMap<String, UserAuth>,
    pub shards: Vec<ShardConfig>,
    pub routing: RoutingConfig,
    pub control: ControlConfig,
}

/// The validated `[control]` section.
#[derive(Debug, Clone)]
pub enum ControlConfig {
    Off,
    Embedded { data_dir: PathBuf, listen: SocketAddr, node_id: u64, token: Option<String>, router_id: String },
    Remote { endpoints: Vec<String>, token: Option<String>, router_id: String, startup_timeout: Duration },
}

/// The sharding topology the router starts with.
#[derive(Debug, Clone)]
pub struct RoutingConfig {
    pub vschema: Arc<vindex::ValidatedVSchema>,
    pub shard_map: Arc<vindex::ShardMap>,
    pub default_keyspace: Option<String>,
    pub max_buffered_rows: usize,
    pub plan_cache_size: usize,
}

/// The keyspace used when the config has no `vschema`.
pub const DEFAULT_KEYSPACE: &str = "default";

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub min_size: usize,
    pub max_size: usize,
    pub connect_timeout: Duration,
    pub checkout_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    pub health_check_after_idle: Duration,
}

#[derive(Debug, Clone)]
pub struct ShardConfig {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub tls: BackendTls,
    pub tls_ca_file: Option<PathBuf>,
    pub database: Option<String>,
}

impl RawConfig {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse { path: path.to_owned(), source },
            other => other,
        })
    }

    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: PathBuf::from("<string>"), source: Box::new(e) })
    }

    /// Checks every field and builds the runtime configuration.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let s = &self.server;
        let listen = s
            .listen
            .parse()
            .map_err(|_| invalid("server.listen", format!("{:?} is not an ip:port address", s.listen)))?;
        if s.worker_threads > 1024 {
            return Err(invalid("server.worker_threads", "must be at most 1024 (0 = one per CPU)"));
        }
        if s.max_client_connections == 0 {
            return Err(invalid("server.max_client_connections", "must be at least 1"));
        }
        if s.max_message_bytes < 1024 || s.max_message_bytes > crate::protocol::frame::PG_MAX_MESSAGE_LEN {
            return Err(invalid("server.max_message_bytes", "must be between 1024 and 1073741823"));
        }
        let metrics_listen = match &self.metrics {
            None => None,
            Some(m) => Some(m.listen.parse().map_err(|_| {
                invalid("metrics.listen", format!("{:?} is not an ip:port address", m.listen))
            })?),
        };
        let p = &self.pool;
        if p.max_size == 0 {
            return Err(invalid("pool.max_size", "must be at least 1"));
        }
        if p.min_size > p.max_size {
            return Err(invalid("pool.min_size", "must not exceed pool.max_size"));
        }
        for (field, v) in [
            ("pool.connect_timeout_ms", p.connect_timeout_ms),
            ("pool.checkout_timeout_ms", p.checkout_timeout_ms),
            ("pool.idle_timeout_ms", p.idle_timeout_ms),
            ("pool.max_lifetime_ms", p.max_lifetime_ms),
            ("server.login_timeout_ms", s.login_timeout_ms),
        ] {
            if v == 0 {
                return Err(invalid(field, "must be greater than 0"));
            }
        }
        if self.databases.is_empty() {
            return Err(invalid("databases", "list at least one database"));
        }
        if self.shards.is_empty() {
            return Err(invalid("shards", "configure at least one shard"));
        }
        let mut names = BTreeSet::new();
        for (i, sh) in self.shards.iter().enumerate() {
            if sh.name.is_empty() || !names.insert(sh.name.clone()) {
                return Err(invalid(format!("shards[{i}].name"), "must be non-empty and unique"));
            }
            if sh.port == 0 {
                return Err(invalid(format!("shards[{i}].port"), "must not be 0"));
            }
            if let Some(path) = crate::pool::unix_socket_path(&sh.host, sh.port) {
                if sh.tls == BackendTls::Require {
                    return Err(invalid(
                        format!("shards[{i}].tls"),
                        "TLS is not available over a Unix-domain socket",
                    ));
                }
                // sun_path holds 108 bytes with the terminator.
                if path.as_os_str().len() > 107 {
                    return Err(invalid(
                        format!("shards[{i}].host"),
                        format!("the socket path {} is longer than 107 bytes", path.display()),
                    ));
                }
            }
            if sh.tls == BackendTls::Require && sh.tls_ca_file.is_none() {
                return Err(invalid(
                    format!("shards[{i}].tls_ca_file"),
                    "required with tls = \"require\": the shard's certificate is always verified",
                ));
            }
            if sh.tls == BackendTls::Disable && sh.tls_ca_file.is_some() {
                return Err(invalid(format!("shards[{i}].tls_ca_file"), "only used with tls = \"require\""));
            }
            match &sh.database {
                Some(d) if d.is_empty() => {
                    return Err(invalid(format!("shards[{i}].database"), "must not be empty"));
                }
                Some(_) if self.databases.len() > 1 => {
                    return Err(invalid(
                        format!("shards[{i}].database"),
                        "a shard with its own database needs exactly one entry in `databases`",
                    ));
                }
                _ => {}
            }
            // Two shards on the same data would both answer every scatter: duplicate rows.
            if let Some(j) = self.shards[..i]
                .iter()
                .position(|o| o.host == sh.host && o.port == sh.port && o.database == sh.database)
            {
                return Err(invalid(
                    format!("shards[{i}]"),
                    format!(
                        "same server and database as shards[{j}]; give each shard its own server or `database`"
                    ),
                ));
            }
        }
        if self.users.is_empty() {
            return Err(invalid("users", "configure at least one user"));
        }
        let mut users = HashMap::new();
        for (i, u) in self.users.iter().enumerate() {
            let auth = UserAuth::from_raw(u).map_err(|reason| invalid(format!("users[{i}]"), reason))?;
            if users.insert(u.name.clone(), auth).is_some() {
                return Err(invalid(format!("users[{i}].name"), format!("duplicate user {:?}", u.name)));
            }
        }
        if let Some(tls) = &self.tls {
            for (field, path) in [("tls.cert_file", &tls.cert_file), ("tls.key_file", &tls.key_file)] {
                if !path.is_file() {
                    return Err(invalid(field, format!("{} is not a readable file", path.display())));
                }
            }
        }
        let routing = self.validate_routing()?;
        let control = self.validate_control()?;
        Ok(Config {
            routing,
            control,
            listen,
            max_client_connections: s.max_client_connections,
            pool_mode: s.pool_mode,
            max_message_bytes: s.max_message_bytes,
            shutdown_timeout: Duration::from_millis(s.shutdown_timeout_ms),
            login_timeout: Duration::from_millis(s.login_timeout_ms),
            worker_threads: s.worker_threads,
            tls: self.tls.clone(),
            metrics_listen,
            pool: PoolConfig {
                min_size: p.min_size,
                max_size: p.max_size,
                connect_timeout: Duration::from_millis(p.connect_timeout_ms),
                checkout_timeout: Duration::from_millis(p.checkout_timeout_ms),
                idle_timeout: Duration::from_millis(p.idle_timeout_ms),
                max_lifetime: Duration::from_millis(p.max_lifetime_ms),
                health_check_after_idle: Duration::from_millis(p.health_check_after_idle_ms),
            },
            databases: self.databases.iter().cloned().collect(),
            users,
            shards: self
                .shards
                .iter()
                .map(|s| ShardConfig {
                    name: s.name.clone(),
                    host: s.host.clone(),
                    port: s.port,
                    tls: s.tls,
                    tls_ca_file: s.tls_ca_file.clone(),
                    database: s.database.clone(),
                })
                .collect(),
        })
    }

    fn validate_control(&self) -> Result<ControlConfig, ConfigError> {
        let c = &self.control;
        let token = match (&c.token, &c.token_env) {
            (Some(_), Some(_)) => return Err(invalid("control.token_env", "set either token or token_env")),
            (Some(t), None) => Some(t.clone()),
            (None, Some(var)) => match std::env::var(var) {
                Ok(t) if !t.is_empty() => Some(t),
                _ => {
                    return Err(invalid(
                        "control.token_env",
                        format!("environment variable {var} is not set"),
                    ))
                }
            },
            (None, None) => None,
        };
        if token.as_deref() == Some("") {
            return Err(invalid("control.token", "must not be empty"));
        }
        let router_id = c.router_id.clone().unwrap_or_else(|| self.server.listen.clone());
        match c.mode {
            ControlMode::Off => Ok(ControlConfig::Off),
            ControlMode::Embedded => {
                let listen = c.listen.parse().map_err(|_| {
                    invalid("control.listen", format!("{:?} is not an ip:port address", c.listen))
                })?;
                if c.node_id == 0 {
                    return Err(invalid("control.node_id", "must be at least 1"));
                }
                if !c.endpoints.is_empty() {
                    return Err(invalid("control.endpoints", "only used with mode = \"remote\""));
                }
                Ok(ControlConfig::Embedded {
                    data_dir: c.data_dir.clone(),
                    listen,
                    node_id: c.node_id,
                    token,
                    router_id,
                })
            }
            ControlMode::Remote => {
                if c.endpoints.is_empty() {
                    return Err(invalid("control.endpoints", "list the control nodes' API addresses"));
                }
                if c.startup_timeout_ms == 0 {
                    return Err(invalid("control.startup_timeout_ms", "must be greater than 0"));
                }
                Ok(ControlConfig::Remote {
                    endpoints: c.endpoints.clone(),
                    token,
                    router_id,
                    startup_timeout: Duration::from_millis(c.startup_timeout_ms),
                })
            }
        }
    }

    fn validate_routing(&self) -> Result<RoutingConfig, ConfigError> {
        let r = &self.routing;
        if r.max_buffered_rows == 0 {
            return Err(invalid("routing.max_buffered_rows", "must be at least 1"));
        }
        if r.plan_cache_size == 0 {
            return Err(invalid("routing.plan_cache_size", "must be at least 1"));
        }
        let (vschema, shard_map, default_keyspace) = match (&self.vschema, &self.shard_map) {
            (None, None) => {
                let mut vschema = vindex::VSchema::default();
                vschema.keyspaces.insert(DEFAULT_KEYSPACE.to_owned(), vindex::KeyspaceDef::default());
                let doc = vindex::ShardMapDoc {
                    version: 1,
                    keyspaces: [(
                        DEFAULT_KEYSPACE.to_owned(),
                        vindex::KeyspaceDoc {
                            shards: vec![vindex::Shard::new(
                                vindex::ShardName::new(&self.shards[0].name)
                                    .map_err(|e| invalid("shards[0].name", e.to_string()))?,
                                vindex::KeyRange::FULL,
                            )],
                        },
                    )]
                    .into(),
                };
                let default = r.default_keyspace.clone().unwrap_or_else(|| DEFAULT_KEYSPACE.to_owned());
                (vschema, doc, Some(default))
            }
            (Some(v), Some(m)) => (v.clone(), m.clone(), r.default_keyspace.clone()),
            (Some(_), None) => return Err(invalid("shard_map", "required when vschema is set")),
            (None, Some(_)) => return Err(invalid("vschema", "required when shard_map is set")),
        };
        let vschema = vschema.validate().map_err(|e| invalid("vschema", e.to_string()))?;
        let shard_map =
            vindex::ShardMap::try_from(shard_map).map_err(|e| invalid("shard_map", e.to_string()))?;
        vschema.check_shard_map(&shard_map).map_err(|e| invalid("shard_map", e.to_string()))?;
        for ks in shard_map.keyspaces() {
            for sh in ks.shards() {
                if !self.shards.iter().any(|s| s.name == sh.name.as_str()) {
                    return Err(invalid(
                        format!("shard_map.keyspaces.{}", ks.keyspace()),
                        format!("shard {:?} is not one of the [[shards]] names", sh.name.as_str()),
                    ));
                }
            }
        }
        if let Some(name) = &default_keyspace {
            match vschema.keyspace(name) {
                None => {
                    return Err(invalid(
                        "routing.default_keyspace",
                        format!("no keyspace {name:?} in vschema"),
                    ))
                }
                Some(k) if k.is_sharded() => {
                    return Err(invalid(
                        "routing.default_keyspace",
                        format!("keyspace {name:?} is sharded; the default keyspace must be unsharded"),
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(RoutingConfig {
            vschema: Arc::new(vschema),
            shard_map: Arc::new(shard_map),
            default_keyspace,
            max_buffered_rows: r.max_buffered_rows,
            plan_cache_size: r.plan_cache_size,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    pub(super) const BASE: &str = r#"
        databases = ["app"]
        [[users]]
        name = "app"
        password = "secret"
        [[shards]]
        name = "s0"
        host = "127.0.0.1"
        port = 5432
    "#;

    #[test]
    fn defaults() {
        let c = RawConfig::from_toml(BASE).unwrap().validate().unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:6432");
        assert_eq!(c.pool_mode, PoolMode::Transaction);
        assert_eq!(c.pool.max_size, 20);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = RawConfig::from_toml(&format!("{BASE}\nbogus = 1")).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        let err = RawConfig::from_toml(&BASE.replace("port = 5432", "port = 5432\nprot = 1")).unwrap_err();
        assert!(err.to_string().contains("prot"), "{err}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases = [
            ("[server]\nlisten = \"nope\"", "server.listen"),
            ("[pool]\nmax_size = 0", "pool.max_size"),
            ("[pool]\nmin_size = 30", "pool.min_size"),
            ("[server]\nmax_message_bytes = 10", "server.max_message_bytes"),
        ];
        for (extra, field) in cases {
            let err = RawConfig::from_toml(&format!("{BASE}\n{extra}")).unwrap().validate().unwrap_err();
            assert!(err.to_string().contains(field), "{extra}: {err}");
        }
        let dup = format!("{BASE}\n[[shards]]\nname = \"s0\"\nhost = \"h\"\nport = 1");
        let err = RawConfig::from_toml(&dup).unwrap().validate().unwrap_err();
        assert!(err.to_string().contains("shards[1].name"), "{err}");
        let err = RawConfig::from_toml(&format!("{BASE}\n[server]\npool_mode = \"statement\"")).unwrap_err();
        assert!(err.to_string().contains("pool_mode"), "{err}");
    }

    #[test]
    fn shards_on_one_server_need_their_own_databases() {
        let second = |extra: &str| {
            format!("{BASE}\n[[shards]]\nname = \"s1\"\nhost = \"127.0.0.1\"\nport = 5432\n{extra}")
        };
        let err = RawConfig::from_toml(&second("")).unwrap().validate().unwrap_err();
        assert!(err.to_string().contains("shards[1]") && err.to_string().contains("shards[0]"), "{err}");
        let c = RawConfig::from_toml(&second("database = \"app_s1\"")).unwrap().validate().unwrap();
        assert_eq!(c.shards[1].database.as_deref(), Some("app_s1"));
        assert_eq!(c.shards[0].database, None);
        let two_dbs = second("database = \"app_s1\"")
            .replace("databases = [\"app\"]", "databases = [\"app\", \"other\"]");
        let err = RawConfig::from_toml(&two_dbs).unwrap().validate().unwrap_err();
        assert!(err.to_string().contains("shards[1].database"), "{err}");
        let err = RawConfig::from_toml(&second("database = \"\"")).unwrap().validate().unwrap_err();
        assert!(err.to_string().contains("shards[1].database"), "{err}");
    }

    #[test]
    fn a_host_that_is_a_directory_is_a_unix_socket_without_tls() {
        let unix = |host: &str, extra: &str| {
            BASE.replace("host = \"127.0.0.1\"", &format!("host = \"{host}\"\n{extra}"))
        };
        let c = RawConfig::from_toml(&unix("/run/postgresql", "")).unwrap().validate().unwrap();
        assert_eq!(
            crate::pool::unix_socket_path(&c.shards[0].host, c.shards[0].port),
            Some(PathBuf::from("/run/postgresql/.s.PGSQL.5432"))
        );
        assert_eq!(crate::pool::unix_socket_path("db.internal", 5432), None);
        let tls = unix("/run/postgresql", "tls = \"require\"\ntls_ca_file = \"/ca.pem\"");
        let err = RawConfig::from_toml(&tls).unwrap().validate().unwrap_err();
        assert!(err.to_string().contains("shards[0].tls") && err.to_string().contains("Unix"), "{err}");
        let long = format!("/{}", "d".repeat(100));
        let err = RawConfig::from_toml(&unix(&long, "")).unwrap().validate().unwrap_err();
        assert!(err.to_string().contains("shards[0].host") && err.to_string().contains("107"), "{err}");
    }
}

#[cfg(test)]
mod routing_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The one-shard base config of the other tests, plus a second shard.
    fn base() -> String {
        format!("{}\n[[shards]]\nname = \"s1\"\nhost = \"127.0.0.1\"\nport = 5433\n", super::tests::BASE)
    }

    /// The sharding part of the README's configuration reference.
    const SHARDED: &str = r#"
        [routing]
        default_keyspace = "main"
        [vschema.keyspaces.main]
        sharded = false
        [vschema.keyspaces.app]
        sharded = true
        vindexes.hash_id = { type = "hash", params = { column_type = "int" } }
        tables.users = { column_vindexes = [{ column = "id", vindex = "hash_id" }] }
        tables.orders = { column_vindexes = [{ column = "user_id", vindex = "hash_id" }] }
        tables.countries = { type = "reference" }
        [shard_map]
        version = 1
        keyspaces.main.shards = [{ name = "s0", range = "-" }]
        keyspaces.app.shards = [{ name = "s0", range = "-80" }, { name = "s1", range = "80-" }]
    "#;

    fn validate(extra: &str) -> Result<Config, ConfigError> {
        RawConfig::from_toml(&format!("{}\n{extra}", base())).unwrap().validate()
    }

    #[test]
    fn readme_sharding_example_is_valid() {
        let c = validate(SHARDED).unwrap();
        assert_eq!(c.routing.default_keyspace.as_deref(), Some("main"));
        assert_eq!(c.routing.shard_map.keyspace("app").unwrap().shards().len(), 2);
    }

    #[test]
    fn without_a_vschema_everything_is_one_keyspace_on_the_first_shard() {
        let c = validate("").unwrap();
        assert_eq!(c.routing.default_keyspace.as_deref(), Some(DEFAULT_KEYSPACE));
        let shards = c.routing.shard_map.keyspace(DEFAULT_KEYSPACE).unwrap().shards();
        assert_eq!(shards.len(), 1);
        assert_eq!(shards[0].name.as_str(), "s0");
    }

    #[test]
    fn bad_topologies_name_the_field() {
        let cases = [
            (
                SHARDED.replace(r#"name = "s1", range = "80-""#, r#"name = "s9", range = "80-""#),
                "shard_map.keyspaces.app",
            ),
            (SHARDED.replace(r#"range = "80-""#, r#"range = "90-""#), "shard_map"),
            (
                SHARDED.replace(r#"default_keyspace = "main""#, r#"default_keyspace = "app""#),
                "routing.default_keyspace",
            ),
            (
                SHARDED.replace(r#"default_keyspace = "main""#, r#"default_keyspace = "nope""#),
                "routing.default_keyspace",
            ),
            (
                SHARDED.replace(
                    r#"vindex = "hash_id" }] }
        tables.orders"#,
                    r#"vindex = "nope" }] }
        tables.orders"#,
                ),
                "vschema",
            ),
            (SHARDED[..SHARDED.find("[shard_map]").unwrap()].to_owned(), "shard_map"),
            (format!("{SHARDED}\n[routing.extra]\n"), "extra"),
        ];
        for (extra, field) in cases {
            let err = match RawConfig::from_toml(&format!("{}\n{extra}", base())) {
                Ok(raw) => raw.validate().unwrap_err().to_string(),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(field), "{field}: {err}");
        }
    }
}
