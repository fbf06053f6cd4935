//! Router-global prepared statements.
//!
//! In transaction pooling a client's named statement must exist on whichever backend serves
//! it. The router gives each distinct (query text, parameter types) one global id and prepares
//! it on a backend as `pgr_<id>` the first time that backend needs it, so clients that prepare
//! the same text share one backend statement (as PgBouncer ≥ 1.21 does).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use planner::Plan;

use super::classify::{classify, SessionEffect, StatementKind};

/// The plan of a statement text under one topology, kept with the text: a Bind of a prepared
/// statement routes from it without looking the text up in the planner's cache (which hashes
/// the whole text) again. Valid only for the topology it was planned with; a new topology
/// replaces it at the next Bind.
#[derive(Debug, Default)]
pub struct PlanSlot(Mutex<Option<(u64, Arc<Plan>)>>);

impl PlanSlot {
    /// The plan remembered for topology `id`, if any.
    pub fn get(&self, topology: u64) -> Option<Arc<Plan>> {
        let slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        slot.as_ref().filter(|(id, _)| *id == topology).map(|(_, plan)| plan.clone())
    }

    pub fn set(&self, topology: u64, plan: &Arc<Plan>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((topology, plan.clone()));
    }
}

/// One distinct statement.
#[derive(Debug)]
pub struct StatementDef {
    pub id: u64,
    /// The backend-side name, `pgr_<id>`.
    pub name: String,
    pub query: Arc<str>,
    /// Raw `count:i16 | oid:i32*` section of the Parse message.
    pub param_types: Bytes,
    pub kind: StatementKind,
    pub effects: Vec<SessionEffect>,
    pub plan: PlanSlot,
}

#[derive(Default)]
pub struct StatementRegistry {
    inner: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    by_text: foldhash::HashMap<(String, Bytes), Arc<StatementDef>>,
    next_id: u64,
}

impl StatementRegistry {
    /// The global statement for this text and parameter types, created on first sight.
    pub fn intern(&self, query: &str, param_types: &[u8]) -> Arc<StatementDef> {
        let mut reg = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let key = (query.to_owned(), Bytes::copy_from_slice(param_types));
        if let Some(def) = reg.by_text.get(&key) {
            return def.clone();
        }
        reg.next_id += 1;
        let id = reg.next_id;
        let (kind, effects) = classify(query);
        let def = Arc::new(StatementDef {
            id,
            name: format!("pgr_{id}"),
            query: Arc::from(key.0.as_str()),
            param_types: key.1.clone(),
            kind,
            effects,
            plan: PlanSlot::default(),
        });
        reg.by_text.insert(key, def.clone());
        def
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|r| r.by_text.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_plan_serves_only_the_topology_it_was_planned_under() {
        let slot = PlanSlot::default();
        assert!(slot.get(1).is_none());
        let plan = Arc::new(Plan {
            class: planner::StatementClass::Other,
            action: planner::Action::Session,
            params: 0,
        });
        slot.set(1, &plan);
        assert!(slot.get(1).is_some_and(|p| Arc::ptr_eq(&p, &plan)));
        assert!(slot.get(2).is_none(), "another topology plans again");
        slot.set(2, &plan);
        assert!(slot.get(1).is_none(), "one topology at a time");
    }

    #[test]
    fn same_text_same_id() {
        let r = StatementRegistry::default();
        let a = r.intern("select $1", &[0, 1, 0, 0, 0, 23]);
        let b = r.intern("select $1", &[0, 1, 0, 0, 0, 23]);
        let c = r.intern("select $1", &[0, 0]);
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        assert_eq!(r.len(), 2);
        assert_eq!(a.name, format!("pgr_{}", a.id));
    }
}
