//! The plan cache: exact statement text → plan or error, bounded, FIFO eviction.
//!
//! A `Planner` belongs to one VSchema version, so the text alone is the key. A hit clones an
//! `Arc` (or a small error) under a mutex and never parses. FIFO is enough: applications
//! repeat a small set of statement texts, and a miss only costs one parse (~10 µs). Texts are
//! hashed with foldhash, seeded per process: a fraction of SipHash's cost per lookup, and
//! clients cannot predict which texts collide.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::PlanError;
use crate::plan::Plan;

type Entry = Result<Arc<Plan>, PlanError>;

#[derive(Debug)]
struct Inner<V> {
    map: foldhash::HashMap<Arc<str>, V>,
    order: VecDeque<Arc<str>>,
}

impl<V> Default for Inner<V> {
    fn default() -> Self {
        Inner { map: foldhash::HashMap::default(), order: VecDeque::new() }
    }
}

/// Bounded map from statement text to plan (or, for the shape cache, to an optional template).
#[derive(Debug)]
pub(crate) struct PlanCache<V = Entry> {
    capacity: usize,
    inner: Mutex<Inner<V>>,
}

impl<V: Clone> PlanCache<V> {
    pub(crate) fn new(capacity: usize) -> Self {
        PlanCache { capacity, inner: Mutex::new(Inner::default()) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<V>> {
        // A panic while holding the lock cannot leave the map inconsistent (single inserts).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, sql: &str) -> Option<V> {
        self.lock().map.get(sql).cloned()
    }

    pub(crate) fn insert(&self, sql: &str, entry: V) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.lock();
        if inner.map.contains_key(sql) {
            return;
        }
        while inner.map.len() >= self.capacity {
            match inner.order.pop_front() {
                Some(old) => {
                    inner.map.remove(&old);
                }
                None => break,
            }
        }
        let key: Arc<str> = Arc::from(sql);
        inner.order.push_back(key.clone());
        inner.map.insert(key, entry);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Action, StatementClass};

    fn plan() -> Entry {
        Ok(Arc::new(Plan { class: StatementClass::Session, action: Action::Session, params: 0 }))
    }

    #[test]
    fn bounded_fifo() {
        let c: PlanCache = PlanCache::new(2);
        c.insert("a", plan());
        c.insert("b", plan());
        c.insert("c", Err(PlanError::TooComplex));
        assert_eq!(c.len(), 2);
        assert!(c.get("a").is_none());
        assert!(matches!(c.get("c"), Some(Err(PlanError::TooComplex))));
        let zero: PlanCache = PlanCache::new(0);
        zero.insert("a", plan());
        assert!(zero.get("a").is_none());
    }
}
