//! `VSchema` → `ValidatedVSchema`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{
    AutoIncrement, ColumnVindex, KeyspaceDef, KeyspaceInfo, TableDef, TableInfo, TableKind, VSchema,
    ValidatedVSchema,
};
use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::vindex::Vindex;

pub(super) fn validate(doc: &VSchema, registry: &Registry) -> Result<ValidatedVSchema> {
    let mut keyspaces = BTreeMap::new();
    for (name, def) in &doc.keyspaces {
        keyspaces.insert(name.clone(), build_keyspace(name, def, registry)?);
    }
    let mut tables: BTreeMap<String, TableInfo> = BTreeMap::new();
    for (ks_name, def) in &doc.keyspaces {
        let ks = &keyspaces[ks_name];
        for (table_name, table) in &def.tables {
            if let Some(existing) = tables.get(table_name) {
                return Err(Error::TableInMultipleKeyspaces {
                    table: table_name.clone(),
                    first: existing.keyspace.clone(),
                    second: ks_name.clone(),
                });
            }
            let info = build_table(ks, table_name, table)?;
            tables.insert(table_name.clone(), info);
        }
    }
    resolve_auto_increments(doc, &mut tables)?;
    for (ks_name, def) in &doc.keyspaces {
        check_owners(ks_name, def, &keyspaces[ks_name])?;
    }
    Ok(ValidatedVSchema { doc: doc.clone(), keyspaces, tables })
}

fn build_keyspace(name: &str, def: &KeyspaceDef, registry: &Registry) -> Result<KeyspaceInfo> {
    if !def.sharded && !def.vindexes.is_empty() {
        return Err(Error::VindexInUnshardedKeyspace { keyspace: name.to_owned(), table: None });
    }
    let mut vindexes = BTreeMap::new();
    for (vname, vdef) in &def.vindexes {
        let built = registry.build(vname, &vdef.type_name, &vdef.params).map_err(|e| {
            Error::InvalidVindex { keyspace: name.to_owned(), vindex: vname.clone(), source: Box::new(e) }
        })?;
        vindexes.insert(vname.clone(), built);
    }
    Ok(KeyspaceInfo { name: name.to_owned(), sharded: def.sharded, vindexes })
}

/// Is this kind of table allowed here, with or without column vindexes?
fn check_kind(ks: &KeyspaceInfo, table: &str, def: &TableDef) -> Result<()> {
    let keyspace = || ks.name.clone();
    let has_vindexes = !def.column_vindexes.is_empty();
    match (def.kind, ks.sharded) {
        (TableKind::Normal, true) if !has_vindexes => {
            Err(Error::NoPrimaryVindex { keyspace: keyspace(), table: table.to_owned() })
        }
        (TableKind::Normal, false) if has_vindexes => {
            Err(Error::VindexInUnshardedKeyspace { keyspace: keyspace(), table: Some(table.to_owned()) })
        }
        (TableKind::Reference, false) => {
            Err(Error::ReferenceTableInUnshardedKeyspace { keyspace: keyspace(), table: table.to_owned() })
        }
        (TableKind::Sequence, true) => {
            Err(Error::SequenceInShardedKeyspace { keyspace: keyspace(), table: table.to_owned() })
        }
        (TableKind::Reference | TableKind::Sequence, _) if has_vindexes => Err(Error::VindexOnSpecialTable {
            keyspace: keyspace(),
            table: table.to_owned(),
            kind: def.kind.as_str(),
        }),
        _ => Ok(()),
    }
}

fn build_table(ks: &KeyspaceInfo, table: &str, def: &TableDef) -> Result<TableInfo> {
    check_kind(ks, table, def)?;
    let keyspace = || ks.name.clone();
    let mut column_vindexes: Vec<ColumnVindex> = Vec::with_capacity(def.column_vindexes.len());
    for (i, cv) in def.column_vindexes.iter().enumerate() {
        let named = |e: fn(String, String, String, String) -> Error| {
            e(keyspace(), table.to_owned(), cv.column.clone(), cv.vindex.clone())
        };
        let vindex: &Arc<dyn Vindex> = ks.vindex(&cv.vindex).ok_or_else(|| {
            named(|keyspace, table, column, vindex| Error::UnknownVindex { keyspace, table, column, vindex })
        })?;
        if def.column_vindexes[..i].iter().any(|prev| prev.column == cv.column && prev.vindex == cv.vindex) {
            return Err(named(|keyspace, table, column, vindex| Error::DuplicateColumnVindex {
                keyspace,
                table,
                column,
                vindex,
            }));
        }
        if i == 0 && !vindex.is_unique() {
            return Err(named(|keyspace, table, column, vindex| Error::PrimaryVindexNotUnique {
                keyspace,
                table,
                column,
                vindex,
            }));
        }
        if i == 0 && vindex.needs_lookup() {
            return Err(named(|keyspace, table, column, vindex| Error::PrimaryVindexNeedsLookup {
                keyspace,
                table,
                column,
                vindex,
            }));
        }
        column_vindexes.push(ColumnVindex { column: cv.column.clone(), vindex: Arc::clone(vindex) });
    }
    Ok(TableInfo {
        keyspace: keyspace(),
        name: table.to_owned(),
        kind: def.kind,
        sharded_keyspace: ks.sharded,
        column_vindexes,
        auto_increment: None,
    })
}

fn resolve_auto_increments(doc: &VSchema, tables: &mut BTreeMap<String, TableInfo>) -> Result<()> {
    for (ks_name, def) in &doc.keyspaces {
        for (table_name, table) in &def.tables {
            let Some(auto) = &table.auto_increment else {
                continue;
            };
            let (seq_ks, seq_name) = match auto.sequence.split_once('.') {
                Some((k, t)) => (Some(k), t),
                None => (None, auto.sequence.as_str()),
            };
            let target =
                tables.get(seq_name).filter(|t| seq_ks.is_none_or(|k| t.keyspace == k)).ok_or_else(|| {
                    Error::UnknownSequence {
                        keyspace: ks_name.clone(),
                        table: table_name.clone(),
                        sequence: auto.sequence.clone(),
                    }
                })?;
            if target.kind != TableKind::Sequence {
                return Err(Error::NotASequence {
                    keyspace: ks_name.clone(),
                    table: table_name.clone(),
                    sequence: auto.sequence.clone(),
                });
            }
            let resolved = AutoIncrement {
                column: auto.column.clone(),
                sequence_keyspace: target.keyspace.clone(),
                sequence_table: target.name.clone(),
            };
            if let Some(info) = tables.get_mut(table_name) {
                info.auto_increment = Some(resolved);
            }
        }
    }
    Ok(())
}

fn check_owners(ks_name: &str, def: &KeyspaceDef, ks: &KeyspaceInfo) -> Result<()> {
    for (vname, vdef) in &def.vindexes {
        let Some(owner) = &vdef.owner else {
            continue;
        };
        let invalid = |reason| Error::InvalidOwner {
            keyspace: ks_name.to_owned(),
            vindex: vname.clone(),
            owner: owner.clone(),
            reason,
        };
        let needs_lookup = ks.vindex(vname).is_some_and(|v| v.needs_lookup());
        if !needs_lookup {
            return Err(invalid("only lookup vindexes have an owner (functional vindexes keep no state)"));
        }
        let table = def.tables.get(owner).ok_or_else(|| invalid("no such table in this keyspace"))?;
        if !table.column_vindexes.iter().any(|cv| &cv.vindex == vname) {
            return Err(invalid("the owner table does not use this vindex"));
        }
    }
    Ok(())
}
