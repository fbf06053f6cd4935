//! The replicated metadata ([`Catalog`]) and the commands that change it ([`Command`]).
//!
//! Every change goes through [`Catalog::apply`], which is deterministic (it reads nothing but the
//! catalog and the command, so every node computes the same state) and validates the result with
//! the vindex crate's checks: an invalid command is answered [`Outcome::Rejected`] and changes
//! nothing. Changes that routers must follow bump [`Catalog::version`]; the shard map's own
//! version is kept equal to it, so "version N" means one thing everywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use vindex::{ShardMap, ShardMapDoc, VSchema};

/// Where a shard's primary listens. Credentials stay in each router's config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardEndpoint {
    pub host: String,
    pub port: u16,
}

/// What a router last told the store about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterRecord {
    /// The address clients connect to.
    pub addr: String,
    /// The catalog version the router serves with.
    pub version: u64,
    /// Milliseconds since the Unix epoch, from the router's clock.
    pub reported_at_ms: u64,
}

/// Namespaces for records other subsystems keep in the store (2PC decisions, saga logs,
/// resharding jobs). The store only keeps them; their owners give them meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Namespace {
    Transactions,
    Sagas,
    ReshardJobs,
}

/// Everything routers need to route, plus the records other subsystems keep here.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Bumped by every change that affects routing. 0: not bootstrapped yet.
    pub version: u64,
    pub vschema: VSchema,
    pub shard_map: ShardMapDoc,
    /// Shard name → endpoint. Every shard the shard map names has one.
    pub shards: BTreeMap<String, ShardEndpoint>,
    /// Keyspaces whose writes routers refuse (maintenance, resharding cut-over).
    pub write_blocked: BTreeSet<String>,
    /// Router id → its last report.
    pub routers: BTreeMap<String, RouterRecord>,
    pub records: BTreeMap<Namespace, BTreeMap<String, serde_json::Value>>,
}

/// The routing part of a catalog: what a config file or `ctl apply` provides.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingDoc {
    pub vschema: VSchema,
    pub shard_map: ShardMapDoc,
    pub shards: BTreeMap<String, ShardEndpoint>,
}

/// A change to the catalog: the application data of the Raft log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Sets the routing documents if the catalog was never bootstrapped; otherwise a no-op, so
    /// every node of a cluster may propose it at start without overwriting later changes.
    Bootstrap { routing: RoutingDoc },
    /// Replaces the VSchema (checked against the current shard map).
    SetVSchema { vschema: VSchema },
    /// Replaces the shard map (key ranges, shard names).
    SetShardMap { shard_map: ShardMapDoc },
    /// Replaces VSchema, shard map and endpoints together.
    SetRouting { routing: RoutingDoc },
    /// Adds a shard or moves an existing one to a new endpoint.
    PutShard { name: String, endpoint: ShardEndpoint },
    /// Removes a shard that the shard map no longer names.
    RemoveShard { name: String },
    /// Blocks or unblocks writes to a keyspace.
    SetWriteBlock { keyspace: String, blocked: bool },
    /// A router's report of itself; does not bump the version.
    ReportRouter { id: String, record: RouterRecord },
    /// Sets (`Some`) or deletes (`None`) a record; does not bump the version.
    PutRecord { namespace: Namespace, key: String, value: Option<serde_json::Value> },
}

/// The answer to a [`Command`], returned to whoever proposed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The command changed the catalog; `version` is the catalog version after it.
    Applied { version: u64 },
    /// Nothing to change (a repeated bootstrap, a no-op entry).
    Unchanged { version: u64 },
    /// The command was invalid; the catalog is unchanged.
    Rejected { reason: String },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Applied { version } => write!(f, "applied, version {version}"),
            Outcome::Unchanged { version } => write!(f, "unchanged, version {version}"),
            Outcome::Rejected { reason } => write!(f, "rejected: {reason}"),
        }
    }
}

impl Catalog {
    /// The routing documents of this catalog.
    #[must_use]
    pub fn routing(&self) -> RoutingDoc {
        RoutingDoc {
            vschema: self.vschema.clone(),
            shard_map: self.shard_map.clone(),
            shards: self.shards.clone(),
        }
    }

    /// Applies `cmd`; on rejection `self` is unchanged.
    pub fn apply(&mut self, cmd: &Command) -> Outcome {
        let routing_change = match cmd {
            Command::Bootstrap { routing } => {
                if self.version > 0 {
                    return Outcome::Unchanged { version: self.version };
                }
                Some(routing.clone())
            }
            Command::SetRouting { routing } => Some(routing.clone()),
            Command::SetVSchema { vschema } => {
                Some(RoutingDoc { vschema: vschema.clone(), ..self.routing() })
            }
            Command::SetShardMap { shard_map } => {
                Some(RoutingDoc { shard_map: shard_map.clone(), ..self.routing() })
            }
            Command::PutShard { name, endpoint } => {
                if let Err(e) = vindex::ShardName::new(name) {
                    return Outcome::Rejected { reason: e.to_string() };
                }
                if endpoint.host.is_empty() || endpoint.port == 0 {
                    return Outcome::Rejected { reason: format!("shard {name}: host and port are required") };
                }
                let mut r = self.routing();
                r.shards.insert(name.clone(), endpoint.clone());
                Some(r)
            }
            Command::RemoveShard { name } => {
                if !self.shards.contains_key(name) {
                    return Outcome::Rejected { reason: format!("no shard named {name:?}") };
                }
                let mut r = self.routing();
                r.shards.remove(name);
                Some(r)
            }
            Command::SetWriteBlock { keyspace, blocked } => {
                if !self.vschema.keyspaces.contains_key(keyspace) {
                    return Outcome::Rejected { reason: format!("no keyspace {keyspace:?} in the vschema") };
                }
                let changed = if *blocked {
                    self.write_blocked.insert(keyspace.clone())
                } else {
                    self.write_blocked.remove(keyspace)
                };
                if !changed {
                    return Outcome::Unchanged { version: self.version };
                }
                self.version += 1;
                self.shard_map.version = self.version;
                return Outcome::Applied { version: self.version };
            }
            Command::ReportRouter { id, record } => {
                // Reports travel independently and may arrive out of order: never go back.
                if self.routers.get(id).is_some_and(|r| r.version > record.version) {
                    return Outcome::Unchanged { version: self.version };
                }
                self.routers.insert(id.clone(), record.clone());
                return Outcome::Applied { version: self.version };
            }
            Command::PutRecord { namespace, key, value } => {
                let ns = self.records.entry(*namespace).or_default();
                match value {
                    Some(v) => {
                        ns.insert(key.clone(), v.clone());
                    }
                    None => {
                        ns.remove(key);
                    }
                }
                return Outcome::Applied { version: self.version };
            }
        };
        let Some(routing) = routing_change else {
            return Outcome::Unchanged { version: self.version };
        };
        if let Err(reason) = check_routing(&routing) {
            return Outcome::Rejected { reason };
        }
        if let Some(ks) = self.write_blocked.iter().find(|k| !routing.vschema.keyspaces.contains_key(*k)) {
            return Outcome::Rejected {
                reason: format!("keyspace {ks:?} is write-blocked; unblock it before removing it"),
            };
        }
        let mut current = self.routing();
        current.shard_map.version = routing.shard_map.version;
        if routing == current && self.version > 0 {
            return Outcome::Unchanged { version: self.version };
        }
        self.version += 1;
        self.vschema = routing.vschema;
        self.shard_map = routing.shard_map;
        self.shard_map.version = self.version;
        self.shards = routing.shards;
        Outcome::Applied { version: self.version }
    }
}

/// Checks routing documents together: the VSchema and the shard map are valid and fit each
/// other (the vindex crate's checks), and every shard the map names has an endpoint.
pub fn check_routing(r: &RoutingDoc) -> Result<(), String> {
    let vschema = r.vschema.validate().map_err(|e| format!("vschema: {e}"))?;
    let mut doc = r.shard_map.clone();
    doc.version = 0;
    let map = ShardMap::try_from(doc).map_err(|e| format!("shard_map: {e}"))?;
    vschema.check_shard_map(&map).map_err(|e| format!("shard_map: {e}"))?;
    for ks in map.keyspaces() {
        for shard in ks.shards() {
            if !r.shards.contains_key(shard.name.as_str()) {
                return Err(format!(
                    "shard_map: keyspace {:?} names shard {:?}, which has no endpoint",
                    ks.keyspace(),
                    shard.name.as_str()
                ));
            }
        }
    }
    for name in r.shards.keys() {
        vindex::ShardName::new(name).map_err(|e| format!("shards: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    pub(crate) fn routing(shards: &[&str]) -> RoutingDoc {
        let vschema = VSchema::from_toml(
            r#"
            [keyspaces.main]
            [keyspaces.app]
            sharded = true
            [keyspaces.app.vindexes.hash_id]
            type = "hash"
            params = { column_type = "int" }
            [keyspaces.app.tables.users]
            column_vindexes = [{ column = "id", vindex = "hash_id" }]
            "#,
        )
        .unwrap();
        let step = 256 / shards.len();
        let mut app = Vec::new();
        for (i, s) in shards.iter().enumerate() {
            let lo = if i == 0 { String::new() } else { format!("{:02x}", i * step) };
            let hi = if i + 1 == shards.len() { String::new() } else { format!("{:02x}", (i + 1) * step) };
            app.push(format!("{{ name = \"{s}\", range = \"{lo}-{hi}\" }}"));
        }
        let map: ShardMapDoc = toml::from_str(&format!(
            "version = 0\n[keyspaces.main]\nshards = [{{ name = \"{}\", range = \"-\" }}]\n[keyspaces.app]\nshards = [{}]\n",
            shards[0],
            app.join(", ")
        ))
        .unwrap();
        let endpoints = shards
            .iter()
            .enumerate()
            .map(|(i, s)| {
                ((*s).to_owned(), ShardEndpoint { host: "127.0.0.1".into(), port: 5432 + i as u16 })
            })
            .collect();
        RoutingDoc { vschema, shard_map: map, shards: endpoints }
    }

    #[test]
    fn bootstrap_once_then_versions_count_changes() {
        let mut c = Catalog::default();
        let r = routing(&["s0", "s1"]);
        assert_eq!(c.apply(&Command::Bootstrap { routing: r.clone() }), Outcome::Applied { version: 1 });
        assert_eq!(c.shard_map.version, 1);
        assert_eq!(
            c.apply(&Command::Bootstrap { routing: routing(&["x"]) }),
            Outcome::Unchanged { version: 1 }
        );
        assert_eq!(c.apply(&Command::SetRouting { routing: r }), Outcome::Unchanged { version: 1 });
        let out = c.apply(&Command::PutShard {
            name: "s2".into(),
            endpoint: ShardEndpoint { host: "10.0.0.3".into(), port: 5432 },
        });
        assert_eq!(out, Outcome::Applied { version: 2 });
        assert_eq!(
            c.apply(&Command::SetShardMap { shard_map: routing(&["s0", "s1", "s2"]).shard_map }),
            Outcome::Applied { version: 3 }
        );
        assert_eq!(c.shard_map.version, 3);
        assert_eq!(
            c.apply(&Command::SetWriteBlock { keyspace: "app".into(), blocked: true }),
            Outcome::Applied { version: 4 }
        );
        assert_eq!(
            c.apply(&Command::SetWriteBlock { keyspace: "app".into(), blocked: true }),
            Outcome::Unchanged { version: 4 }
        );
        let rec = RouterRecord { addr: "127.0.0.1:6432".into(), version: 4, reported_at_ms: 1 };
        assert_eq!(
            c.apply(&Command::ReportRouter { id: "r1".into(), record: rec }),
            Outcome::Applied { version: 4 }
        );
    }

    #[test]
    fn invalid_changes_are_rejected_and_change_nothing() {
        let mut c = Catalog::default();
        c.apply(&Command::Bootstrap { routing: routing(&["s0", "s1"]) });
        let before = c.clone();
        let reject = |c: &mut Catalog, cmd: Command, needle: &str| match c.apply(&cmd) {
            Outcome::Rejected { reason } => assert!(reason.contains(needle), "{reason:?} lacks {needle:?}"),
            other => panic!("{cmd:?} was {other}"),
        };
        reject(&mut c, Command::RemoveShard { name: "s1".into() }, "\"s1\", which has no endpoint");
        reject(&mut c, Command::RemoveShard { name: "nope".into() }, "no shard named");
        let mut gap = routing(&["s0", "s1"]).shard_map;
        gap.keyspaces.get_mut("app").unwrap().shards.pop();
        reject(&mut c, Command::SetShardMap { shard_map: gap }, "shard_map");
        let mut unknown = routing(&["s0", "s1"]).shard_map;
        let extra = unknown.keyspaces["main"].clone();
        unknown.keyspaces.insert("ghost".into(), extra);
        reject(
            &mut c,
            Command::SetShardMap { shard_map: unknown },
            "keyspace ghost: keyspace is not in the VSchema",
        );
        let mut bad_vindex = c.vschema.clone();
        bad_vindex.keyspaces.get_mut("app").unwrap().vindexes.get_mut("hash_id").unwrap().type_name =
            "md7".into();
        reject(&mut c, Command::SetVSchema { vschema: bad_vindex }, "vschema");
        reject(&mut c, Command::SetWriteBlock { keyspace: "ghost".into(), blocked: true }, "no keyspace");
        let ep = ShardEndpoint { host: String::new(), port: 1 };
        reject(&mut c, Command::PutShard { name: "s9".into(), endpoint: ep }, "host and port");
        assert_eq!(c, before);
    }
}
