//! The sharding topology a statement runs against: VSchema, shard map, the planner built for
//! them, and where each shard lives.
//!
//! A [`Topology`] is immutable and versioned. Sessions take an `Arc` snapshot per statement
//! (per transaction while one is open), so a statement never mixes two versions; a new version
//! is swapped in whole ([`TopologyHandle::set`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use planner::{KeyExpr, KeyVindex, PlanError, Planner, PlannerOptions, Target};
use vindex::{Destination, KeyspaceId, KeyspaceShards, ShardMap, TypeOid, ValidatedVSchema, Value};

use crate::config::RoutingConfig;
use crate::error::{sqlstate, ClientError};

/// Index into the configured `[[shards]]` (a backend endpoint; the pool key's `shard`).
pub type Endpoint = usize;

pub struct Topology {
    /// Unique among the topologies this process builds: what a plan remembered with a
    /// statement text is valid for (see `session::statements::PlanSlot`).
    pub id: u64,
    pub version: u64,
    pub vschema: Arc<ValidatedVSchema>,
    pub shard_map: Arc<ShardMap>,
    pub planner: Planner,
    /// Shard name → endpoint.
    endpoints: foldhash::HashMap<String, Endpoint>,
    /// Keyspace → the endpoint of each of its shards, in key-range order (`None`: no
    /// configured shard by that name): a key resolves by shard index, without a lookup by name.
    by_index: foldhash::HashMap<String, Vec<Option<Endpoint>>>,
    /// Endpoint for [`Target::Any`] when the session holds none: the default keyspace's shard,
    /// else the first configured shard.
    default_endpoint: Endpoint,
    /// Set when every shard of every keyspace is this one endpoint: routing cannot change
    /// anything, so statements skip the planner (a plain pooler costs no parsing).
    single_endpoint: Option<Endpoint>,
    /// Keyspaces whose writes are refused (set through the control plane).
    write_blocked: std::collections::BTreeSet<String>,
}

/// Bound parameter values of one Bind, as the router needs them to resolve `$n` keys.
pub struct BoundParams<'a> {
    /// Per parameter: its format code (0 text, 1 binary).
    pub formats: &'a [i16],
    pub values: &'a [Option<&'a [u8]>],
    /// The Parse's raw parameter-type section (`count:i16 | oid:u32*`, possibly empty).
    pub types: &'a [u8],
}

impl BoundParams<'_> {
    /// The declared type OID of parameter `i` (0-based; 0 = unspecified or not declared).
    fn type_oid(&self, i: usize) -> u32 {
        let declared = self.types.get(..2).map_or(0, |n| i16::from_be_bytes([n[0], n[1]]).max(0) as usize);
        if i >= declared {
            return 0;
        }
        self.types.get(2 + 4 * i..6 + 4 * i).map_or(0, |o| u32::from_be_bytes([o[0], o[1], o[2], o[3]]))
    }
}

impl Topology {
    /// `endpoints`: shard name → backend endpoint (index into the router's pools).
    pub fn new(routing: &RoutingConfig, endpoints: HashMap<String, Endpoint>) -> Result<Self, PlanError> {
        let planner = Planner::new(
            routing.vschema.clone(),
            PlannerOptions {
                default_keyspace: routing.default_keyspace.clone(),
                cache_capacity: routing.plan_cache_size,
            },
        )?;
        let default_endpoint = routing
            .default_keyspace
            .as_deref()
            .and_then(|ks| routing.shard_map.keyspace(ks).ok())
            .and_then(|k| k.shards().first())
            .and_then(|s| endpoints.get(s.name.as_str()).copied())
            .unwrap_or(0);
        let mut all = routing
            .shard_map
            .keyspaces()
            .flat_map(|k| k.shards().iter().map(|s| endpoints.get(s.name.as_str()).copied()));
        let first = all.next().flatten();
        let single_endpoint = match first {
            Some(e) if all.all(|x| x == Some(e)) => Some(e),
            _ => None,
        };
        let by_index = routing
            .shard_map
            .keyspaces()
            .map(|k| {
                let shards = k.shards().iter().map(|s| endpoints.get(s.name.as_str()).copied()).collect();
                (k.keyspace().to_owned(), shards)
            })
            .collect();
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Ok(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            version: routing.shard_map.version(),
            vschema: routing.vschema.clone(),
            shard_map: routing.shard_map.clone(),
            planner,
            endpoints: endpoints.into_iter().collect(),
            by_index,
            default_endpoint,
            single_endpoint,
            write_blocked: Default::default(),
        })
    }

    /// Refuses writes to `keyspaces`. Statements are then always planned (the single-endpoint
    /// fast path cannot see what a statement writes).
    #[must_use]
    pub fn with_write_blocked(mut self, keyspaces: std::collections::BTreeSet<String>) -> Self {
        if !keyspaces.is_empty() {
            self.single_endpoint = None;
        }
        self.write_blocked = keyspaces;
        self
    }

    /// The error for a statement that writes to a write-blocked keyspace.
    pub fn write_block_error(&self, plan: &planner::Plan) -> Option<ClientError> {
        if self.write_blocked.is_empty() {
            return None;
        }
        let ks = plan.written_keyspaces().into_iter().find(|k| self.write_blocked.contains(*k))?;
        Some(ClientError::new(
            "write_blocked",
            sqlstate::READ_ONLY_SQL_TRANSACTION,
            format!("pg-router: keyspace {ks} is write-blocked; writes are refused until it is unblocked"),
        ))
    }

    /// The only endpoint, when the topology has one (see the field).
    pub fn single_endpoint(&self) -> Option<Endpoint> {
        self.single_endpoint
    }

    pub fn default_endpoint(&self) -> Endpoint {
        self.default_endpoint
    }

    fn endpoint(&self, shard: &str) -> Result<Endpoint, ClientError> {
        self.endpoints.get(shard).copied().ok_or_else(|| {
            ClientError::new(
                "routing",
                sqlstate::INTERNAL_ERROR,
                format!("pg-router: shard {shard} has no configured endpoint"),
            )
        })
    }

    /// The endpoint of the shard at `index` of `shards` (in key-range order).
    fn endpoint_at(&self, shards: &KeyspaceShards, index: usize) -> Result<Endpoint, ClientError> {
        match self.by_index.get(shards.keyspace()).and_then(|v| v.get(index).copied().flatten()) {
            Some(e) => Ok(e),
            // The error (no endpoint by that name) as the lookup by name reports it.
            None => self.endpoint(shards.shards()[index].name.as_str()),
        }
    }

    /// Every endpoint of a keyspace, in key-range order.
    pub fn keyspace_endpoints(&self, keyspace: &str) -> Result<Vec<Endpoint>, ClientError> {
        let ks = self.shard_map.keyspace(keyspace).map_err(routing_error)?;
        ks.shards().iter().map(|s| self.endpoint(s.name.as_str())).collect()
    }

    /// The endpoints a target resolves to, sorted and deduplicated. Empty means "no shard can
    /// hold a matching row" (for example `WHERE id = NULL`). `preferred` (a shard the session
    /// holds) is used for [`Target::AnyOf`].
    pub fn resolve(
        &self,
        target: &Target,
        params: Option<&BoundParams<'_>>,
        preferred: Option<Endpoint>,
    ) -> Result<Vec<Endpoint>, ClientError> {
        match target {
            // Always the same shard, so functions with side effects (nextval, advisory locks)
            // act on one server.
            Target::Any => Ok(vec![self.default_endpoint]),
            Target::AnyOf { keyspace } => {
                let all = self.keyspace_endpoints(keyspace)?;
                match preferred.filter(|p| all.contains(p)).or_else(|| all.first().copied()) {
                    Some(e) => Ok(vec![e]),
                    None => Ok(all),
                }
            }
            Target::Unsharded { keyspace } | Target::All { keyspace } => self.keyspace_endpoints(keyspace),
            Target::Named { keyspace, shard } => {
                if let Some(ks) = keyspace {
                    let shards = self.shard_map.keyspace(ks).map_err(routing_error)?;
                    if shards.shard_named(shard).is_none() {
                        return Err(ClientError::new(
                            "routing",
                            sqlstate::UNDEFINED_OBJECT,
                            format!("pg-router: keyspace {ks} has no shard {shard}"),
                        ));
                    }
                }
                self.endpoints.get(shard.as_str()).map(|e| vec![*e]).ok_or_else(|| {
                    ClientError::new(
                        "routing",
                        sqlstate::UNDEFINED_OBJECT,
                        format!("pg-router: no shard named {shard}"),
                    )
                })
            }
            Target::Keys { keyspace, vindex, values } => {
                let column_type = vindex.vindex.column_type();
                let Some(single) = vindex.vindex.as_single_column() else {
                    return self.keyspace_endpoints(keyspace);
                };
                let shards = self.shard_map.keyspace(keyspace).map_err(routing_error)?;
                let mut out = Vec::with_capacity(values.len());
                for key in values {
                    let value = match key {
                        KeyExpr::Literal(v) => std::borrow::Cow::Borrowed(v),
                        KeyExpr::Param(n) => std::borrow::Cow::Owned(bound_value(params, *n, column_type)?),
                    };
                    match single.map_one(&value).map_err(key_error)? {
                        Destination::None => {}
                        Destination::KeyspaceId(id) => {
                            out.push(self.endpoint_at(shards, shards.index_of(id))?)
                        }
                        dest => {
                            for shard in dest.resolve(shards).map_err(routing_error)? {
                                out.push(self.endpoint(shard.name.as_str())?);
                            }
                        }
                    }
                }
                out.sort_unstable();
                out.dedup();
                Ok(out)
            }
        }
    }
}

impl Topology {
    /// The endpoint a new row with this sharding key goes to (INSERT).
    pub fn resolve_key(
        &self,
        keyspace: &str,
        vindex: &KeyVindex,
        key: &KeyExpr,
        params: Option<&BoundParams<'_>>,
    ) -> Result<Endpoint, ClientError> {
        match key {
            KeyExpr::Literal(v) => self.resolve_value(keyspace, vindex, v),
            KeyExpr::Param(n) => {
                let v = bound_value(params, *n, vindex.vindex.column_type())?;
                self.resolve_value(keyspace, vindex, &v)
            }
        }
    }

    /// The endpoint a new row whose sharding key is `value` goes to (INSERT, COPY).
    pub fn resolve_value(
        &self,
        keyspace: &str,
        vindex: &KeyVindex,
        value: &Value,
    ) -> Result<Endpoint, ClientError> {
        let id = self.keyspace_id_of(vindex, value)?;
        let shards = self.shard_map.keyspace(keyspace).map_err(routing_error)?;
        self.endpoint_at(shards, shards.index_of(id))
    }

    /// The keyspace id of a new row with this sharding key (a unique functional vindex).
    pub fn keyspace_id(
        &self,
        vindex: &KeyVindex,
        key: &KeyExpr,
        params: Option<&BoundParams<'_>>,
    ) -> Result<KeyspaceId, ClientError> {
        match key {
            KeyExpr::Literal(v) => self.keyspace_id_of(vindex, v),
            KeyExpr::Param(n) => {
                self.keyspace_id_of(vindex, &bound_value(params, *n, vindex.vindex.column_type())?)
            }
        }
    }

    fn keyspace_id_of(&self, vindex: &KeyVindex, value: &Value) -> Result<KeyspaceId, ClientError> {
        let single = vindex.vindex.as_single_column().ok_or_else(|| not_computable(vindex))?;
        if value.is_null() {
            return Err(ClientError::new(
                "routing",
                sqlstate::NOT_NULL_VIOLATION,
                format!("pg-router: the sharding key {} of a new row must not be NULL", vindex.column),
            ));
        }
        match single.map_one(value).map_err(key_error)? {
            Destination::KeyspaceId(id) => Ok(id),
            _ => Err(not_computable(vindex)),
        }
    }

    /// The values of key expressions (literals, or `$n` bound in `params`) in the vindex's
    /// column type.
    pub fn key_values(
        &self,
        vindex: &KeyVindex,
        keys: &[KeyExpr],
        params: Option<&BoundParams<'_>>,
    ) -> Result<Vec<Value>, ClientError> {
        let column_type = vindex.vindex.column_type();
        keys.iter()
            .map(|key| match key {
                KeyExpr::Literal(v) => Ok(v.clone()),
                KeyExpr::Param(n) => bound_value(params, *n, column_type),
            })
            .collect()
    }

    /// The endpoints of the shards of `keyspace` holding these keyspace ids, sorted and
    /// deduplicated.
    pub fn endpoints_of_ids(&self, keyspace: &str, ids: &[KeyspaceId]) -> Result<Vec<Endpoint>, ClientError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let shards = self.shard_map.keyspace(keyspace).map_err(routing_error)?;
        let mut out = Vec::with_capacity(ids.len());
        for shard in Destination::KeyspaceIds(ids.to_vec()).resolve(shards).map_err(routing_error)? {
            out.push(self.endpoint(shard.name.as_str())?);
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}

fn not_computable(vindex: &KeyVindex) -> ClientError {
    ClientError::new(
        "routing",
        sqlstate::FEATURE_NOT_SUPPORTED,
        format!("pg-router: vindex {} cannot place new rows", vindex.vindex.name()),
    )
}

/// The sharding-key value of parameter `$n` (1-based).
fn bound_value(
    params: Option<&BoundParams<'_>>,
    n: usize,
    column_type: vindex::ColumnType,
) -> Result<Value, ClientError> {
    let missing = || {
        ClientError::new(
            "routing",
            sqlstate::PROTOCOL_VIOLATION,
            format!("pg-router: the statement's sharding key is ${n}, but no value was bound for it"),
        )
    };
    let p = params.ok_or_else(missing)?;
    let i = n.checked_sub(1).ok_or_else(missing)?;
    let raw = *p.values.get(i).ok_or_else(missing)?;
    let oid = TypeOid(p.type_oid(i));
    let value = match p.formats.get(i).copied().unwrap_or(0) {
        0 => Value::from_text_param(raw, oid, column_type),
        _ => Value::from_binary_param(raw, oid, column_type),
    };
    value.map_err(key_error)
}

fn key_error(e: vindex::Error) -> ClientError {
    ClientError::new("routing", sqlstate::INVALID_TEXT_REPRESENTATION, format!("pg-router: {e}"))
}

fn routing_error(e: vindex::Error) -> ClientError {
    ClientError::new("routing", sqlstate::INTERNAL_ERROR, format!("pg-router: {e}"))
}

/// Where sessions get the current topology.
pub struct TopologyHandle {
    current: RwLock<Arc<Topology>>,
    /// Bumped by every `set`, so a session can see there is nothing new with one load.
    version: AtomicU64,
}

impl TopologyHandle {
    pub fn new(t: Topology) -> Self {
        Self { current: RwLock::new(Arc::new(t)), version: AtomicU64::new(0) }
    }

    pub fn get(&self) -> Arc<Topology> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The current topology if it changed since version `seen`, which is then updated.
    pub fn newer(&self, seen: &mut u64) -> Option<Arc<Topology>> {
        let version = self.version.load(Ordering::Acquire);
        if version == *seen {
            return None;
        }
        *seen = version;
        Some(self.get())
    }

    /// Swaps in a new version; statements already running keep theirs.
    pub fn set(&self, t: Topology) {
        let mut g = match self.current.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *g = Arc::new(t);
        // Under the write lock: whoever sees the new version reads the new topology.
        self.version.fetch_add(1, Ordering::Release);
    }
}
