//! The operations of a lookup vindex: pure steps, and the same steps driven through a
//! [`LookupBackend`].

use super::{Lookup, LookupBackend, LookupRequest, LookupRow};
use crate::destination::Destination;
use crate::error::{Error, Result};
use crate::keyspace_id::KeyspaceId;
use crate::value::Value;
use crate::vindex::check_value;

impl Lookup {
    fn check_count(&self, req: &LookupRequest, found: &[Vec<KeyspaceId>]) -> Result<()> {
        if found.len() == req.values.len() {
            Ok(())
        } else {
            Err(Error::LookupResultCount {
                vindex: self.name.clone(),
                expected: req.values.len(),
                got: found.len(),
            })
        }
    }

    /// One value's destination from its lookup result.
    fn destination(&self, ids: &[KeyspaceId]) -> Result<Destination> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        match ids.len() {
            0 => Ok(Destination::None),
            1 => Ok(Destination::KeyspaceId(ids[0])),
            count if self.table.unique => {
                Err(Error::LookupNotUnique { vindex: self.name.clone(), table: self.table.name(), count })
            }
            _ => Ok(Destination::KeyspaceIds(ids)),
        }
    }

    /// Step 2 of `map`: each input's destination, given `found[i]` = the keyspace ids the table
    /// holds for `req.values()[i]`.
    pub fn destinations(&self, req: &LookupRequest, found: &[Vec<KeyspaceId>]) -> Result<Vec<Destination>> {
        self.check_count(req, found)?;
        req.slots
            .iter()
            .map(|slot| match slot {
                None => Ok(Destination::None),
                Some(i) => self.destination(&found[*i]),
            })
            .collect()
    }

    /// Step 2 of `verify`: for each input `i`, does the table hold (value i, `ids[i]`)?
    pub fn verified(
        &self,
        req: &LookupRequest,
        ids: &[KeyspaceId],
        found: &[Vec<KeyspaceId>],
    ) -> Result<Vec<bool>> {
        self.check_count(req, found)?;
        if ids.len() != req.slots.len() {
            return Err(Error::LengthMismatch {
                vindex: self.name.clone(),
                values: req.slots.len(),
                keyspace_ids: ids.len(),
            });
        }
        Ok(req.slots.iter().zip(ids).map(|(slot, id)| slot.is_some_and(|i| found[i].contains(id))).collect())
    }

    /// The rows to insert or delete for owner rows `(values[i], ids[i])`; NULL values are
    /// skipped.
    pub fn rows(&self, values: &[Value], ids: &[KeyspaceId]) -> Result<Vec<LookupRow>> {
        if values.len() != ids.len() {
            return Err(Error::LengthMismatch {
                vindex: self.name.clone(),
                values: values.len(),
                keyspace_ids: ids.len(),
            });
        }
        values
            .iter()
            .zip(ids)
            .filter(|(v, _)| !v.is_null())
            .map(|(v, id)| {
                check_value(self, v)?;
                Ok(LookupRow { value: v.clone(), keyspace_id: *id })
            })
            .collect()
    }

    /// After inserting `rows` into a unique table: given what the table now holds for each
    /// row's value (`found[i]` for `rows[i]`), fail if a value maps to another keyspace id
    /// (the insert was skipped as a conflict: a duplicate secondary key) or to none.
    pub fn check_created(&self, rows: &[LookupRow], found: &[Vec<KeyspaceId>]) -> Result<()> {
        if found.len() != rows.len() {
            return Err(Error::LookupResultCount {
                vindex: self.name.clone(),
                expected: rows.len(),
                got: found.len(),
            });
        }
        for (row, ids) in rows.iter().zip(found) {
            if let Some(other) = ids.iter().find(|id| **id != row.keyspace_id) {
                if self.table.unique {
                    return Err(Error::LookupDuplicate {
                        vindex: self.name.clone(),
                        table: self.table.name(),
                        existing: *other,
                        wanted: row.keyspace_id,
                    });
                }
            }
            if !ids.contains(&row.keyspace_id) {
                return Err(Error::LookupRowMissing {
                    vindex: self.name.clone(),
                    table: self.table.name(),
                    wanted: row.keyspace_id,
                });
            }
        }
        Ok(())
    }

    fn fetch(&self, backend: &mut dyn LookupBackend, req: &LookupRequest) -> Result<Vec<Vec<KeyspaceId>>> {
        if req.is_empty() {
            return Ok(Vec::new());
        }
        backend.lookup(&self.table, &req.values).map_err(|e| self.backend_error(e))
    }

    /// Destinations of `values`, querying the lookup table once for the distinct non-NULL ones.
    pub fn map(&self, backend: &mut dyn LookupBackend, values: &[Value]) -> Result<Vec<Destination>> {
        let req = self.request(values)?;
        let found = self.fetch(backend, &req)?;
        self.destinations(&req, &found)
    }

    /// For each `i`: does the lookup table hold `(values[i], ids[i])`?
    pub fn verify(
        &self,
        backend: &mut dyn LookupBackend,
        values: &[Value],
        ids: &[KeyspaceId],
    ) -> Result<Vec<bool>> {
        let req = self.request(values)?;
        let found = self.fetch(backend, &req)?;
        self.verified(&req, ids, &found)
    }

    /// Record owner rows `(values[i], ids[i])` (INSERT into the owner table). For a unique
    /// vindex, reads the rows back and fails with [`Error::LookupDuplicate`] if a value already
    /// belonged to another keyspace id.
    pub fn create(
        &self,
        backend: &mut dyn LookupBackend,
        values: &[Value],
        ids: &[KeyspaceId],
    ) -> Result<()> {
        let rows = self.rows(values, ids)?;
        if rows.is_empty() {
            return Ok(());
        }
        backend.create(&self.table, &rows).map_err(|e| self.backend_error(e))?;
        if !self.table.unique {
            // ON CONFLICT (value, id) DO NOTHING: success means the row exists.
            return Ok(());
        }
        let row_values: Vec<Value> = rows.iter().map(|r| r.value.clone()).collect();
        let req = self.request(&row_values)?;
        let found = self.fetch(backend, &req)?;
        self.check_count(&req, &found)?;
        let per_row: Vec<Vec<KeyspaceId>> =
            req.slots.iter().map(|slot| slot.map(|i| found[i].clone()).unwrap_or_default()).collect();
        self.check_created(&rows, &per_row)
    }

    /// Forget owner rows `(values[i], ids[i])` (DELETE from the owner table).
    pub fn delete(
        &self,
        backend: &mut dyn LookupBackend,
        values: &[Value],
        ids: &[KeyspaceId],
    ) -> Result<()> {
        let rows = self.rows(values, ids)?;
        if rows.is_empty() {
            return Ok(());
        }
        backend.delete(&self.table, &rows).map_err(|e| self.backend_error(e))
    }

    /// The owner row with keyspace id `id` changed its column from `old` to `new`.
    pub fn update(
        &self,
        backend: &mut dyn LookupBackend,
        old: &Value,
        new: &Value,
        id: KeyspaceId,
    ) -> Result<()> {
        check_value(self, old)?;
        check_value(self, new)?;
        if old == new {
            return Ok(());
        }
        self.delete(backend, std::slice::from_ref(old), &[id])?;
        self.create(backend, std::slice::from_ref(new), &[id])
    }
}
