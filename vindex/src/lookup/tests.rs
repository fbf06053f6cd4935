#![allow(clippy::unwrap_used)]

use super::*;
use crate::registry::{Params, Registry};
use crate::testing::MemoryBackend;
use crate::Destination;

fn email_lookup(unique: bool) -> Lookup {
    let table =
        LookupTable::new("lookups.user_email", "email", DEFAULT_TO_COLUMN, ColumnType::Text, unique).unwrap();
    Lookup::new("email_idx", table)
}

fn id(raw: u64) -> KeyspaceId {
    KeyspaceId::new(raw)
}

fn text(s: &str) -> Value {
    Value::from(s)
}

#[test]
fn sql_text() {
    let u = email_lookup(true);
    let t = u.table();
    assert_eq!(
        t.create_table_sql(),
        "CREATE TABLE IF NOT EXISTS \"lookups\".\"user_email\" (\"email\" text NOT NULL, \"keyspace_id\" bytea NOT NULL CHECK (octet_length(\"keyspace_id\") = 8), PRIMARY KEY (\"email\"))"
    );
    assert_eq!(
        t.select_sql(),
        "SELECT \"email\", \"keyspace_id\" FROM \"lookups\".\"user_email\" WHERE \"email\" = ANY($1::text[])"
    );
    assert_eq!(
        t.insert_sql(),
        "INSERT INTO \"lookups\".\"user_email\" (\"email\", \"keyspace_id\") SELECT * FROM unnest($1::text[], $2::bytea[]) ON CONFLICT (\"email\") DO NOTHING"
    );
    assert_eq!(
        t.delete_sql(),
        "DELETE FROM \"lookups\".\"user_email\" WHERE (\"email\", \"keyspace_id\") IN (SELECT * FROM unnest($1::text[], $2::bytea[]))"
    );
    let n = LookupTable::new("Odd\"Name", "v", "k", ColumnType::Int, false).unwrap();
    assert_eq!(
        n.create_table_sql(),
        "CREATE TABLE IF NOT EXISTS \"Odd\"\"Name\" (\"v\" bigint NOT NULL, \"k\" bytea NOT NULL CHECK (octet_length(\"k\") = 8), PRIMARY KEY (\"v\", \"k\"))"
    );
    assert!(n.insert_sql().ends_with("ON CONFLICT (\"v\", \"k\") DO NOTHING"));
    assert_eq!(n.name(), "Odd\"Name");
}

#[test]
fn literal_sql_text() {
    let u = email_lookup(true);
    let t = u.table();
    let it = text("it's");
    assert_eq!(
        t.ids_literal_sql(&[it.clone(), text("b")]),
        "SELECT DISTINCT encode(\"keyspace_id\", 'hex') FROM \"lookups\".\"user_email\" WHERE \"email\" IN \
         (convert_from(decode('69742773', 'hex'), 'UTF8')::text, convert_from(decode('62', 'hex'), 'UTF8')::text)"
    );
    let rows = [LookupRow { value: it.clone(), keyspace_id: id(0x0102_0304_0506_0708) }];
    assert_eq!(
        t.insert_literal_sql(&rows),
        "INSERT INTO \"lookups\".\"user_email\" (\"email\", \"keyspace_id\") VALUES \
         (convert_from(decode('69742773', 'hex'), 'UTF8')::text, decode('0102030405060708', 'hex')) \
         ON CONFLICT (\"email\") DO NOTHING"
    );
    assert_eq!(
        t.held_literal_sql(&rows),
        "SELECT v.i::text || ':' || encode(t.\"keyspace_id\", 'hex') FROM (VALUES (1, \
         convert_from(decode('69742773', 'hex'), 'UTF8')::text)) AS v(i, val) JOIN \"lookups\".\"user_email\" AS t \
         ON t.\"email\" = v.val"
    );
    assert_eq!(
        t.take_over_sql(&it, id(1), id(2)),
        "UPDATE \"lookups\".\"user_email\" SET \"keyspace_id\" = decode('0000000000000002', 'hex') WHERE \
         \"email\" = convert_from(decode('69742773', 'hex'), 'UTF8')::text AND \"keyspace_id\" = \
         decode('0000000000000001', 'hex')"
    );
    assert_eq!(
        t.owner_row_literal_sql("users", "email", &it),
        "SELECT 1 FROM \"users\" WHERE \"email\" = convert_from(decode('69742773', 'hex'), 'UTF8')::text LIMIT 1"
    );
}

#[test]
fn portable_literals_do_not_depend_on_session_settings() {
    assert_eq!(Value::Int(-5).portable_literal(ColumnType::Int), "(-5)::bigint");
    assert_eq!(Value::Null.portable_literal(ColumnType::Text), "NULL::text");
    assert_eq!(Value::Bytes(vec![0, 0x5c]).portable_literal(ColumnType::Bytea), "decode('005c', 'hex')");
    assert_eq!(
        Value::Timestamp(1).portable_literal(ColumnType::TimestampTz),
        "'2000-01-01 00:00:00.000001+00'::timestamptz"
    );
    assert_eq!(
        Value::Timestamp(0).portable_literal(ColumnType::Timestamp),
        "'2000-01-01 00:00:00'::timestamp"
    );
    assert_eq!(
        Value::Timestamp(i64::MAX).portable_literal(ColumnType::TimestampTz),
        "'infinity'::timestamptz"
    );
    let u = Value::Uuid([0x11; 16]).portable_literal(ColumnType::Uuid);
    assert_eq!(u, "'11111111-1111-1111-1111-111111111111'::uuid");
}

#[test]
fn bad_tables() {
    for (table, from, to) in
        [("", "a", "b"), ("a.b.c", "a", "b"), ("t", "", "b"), ("t", "a", "a"), (".t", "a", "b")]
    {
        assert!(LookupTable::new(table, from, to, ColumnType::Int, true).is_err(), "{table}/{from}/{to}");
    }
    let params: Params = [("column_type", "int"), ("table", "a.b.c"), ("from", "x")]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let err = Registry::builtin().build("l", "lookup", &params).unwrap_err().to_string();
    assert_eq!(err, "vindex l (type lookup): parameter \"table\": table must be name or schema.name");
}

#[test]
fn unique_create_map_verify_delete() {
    let v = email_lookup(true);
    let mut db = MemoryBackend::default();
    let emails = [text("a@x"), text("b@x"), Value::Null];
    v.create(&mut db, &emails, &[id(1), id(2), id(3)]).unwrap();
    // NULL is never stored.
    assert_eq!(db.rows.len(), 2);

    let got = v.map(&mut db, &[text("b@x"), text("a@x"), text("zz"), Value::Null, text("a@x")]).unwrap();
    assert_eq!(
        got,
        [
            Destination::KeyspaceId(id(2)),
            Destination::KeyspaceId(id(1)),
            Destination::None,
            Destination::None,
            Destination::KeyspaceId(id(1)),
        ]
    );
    let checks = v.verify(&mut db, &[text("a@x"), text("a@x"), Value::Null], &[id(1), id(2), id(1)]).unwrap();
    assert_eq!(checks, [true, false, false]);

    v.delete(&mut db, &[text("a@x")], &[id(1)]).unwrap();
    assert_eq!(v.map(&mut db, &[text("a@x")]).unwrap(), [Destination::None]);
    // Deleting with the wrong keyspace id deletes nothing.
    v.delete(&mut db, &[text("b@x")], &[id(9)]).unwrap();
    assert_eq!(db.rows.len(), 1);
}

#[test]
fn unique_duplicate_is_an_error_and_retry_is_idempotent() {
    let v = email_lookup(true);
    let mut db = MemoryBackend::default();
    v.create(&mut db, &[text("a@x")], &[id(1)]).unwrap();
    // Same value, same keyspace id (a retried insert): fine.
    v.create(&mut db, &[text("a@x")], &[id(1)]).unwrap();
    let err = v.create(&mut db, &[text("a@x")], &[id(2)]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unique lookup vindex email_idx: duplicate value in lookups.user_email: already maps to keyspace id 0000000000000001, not 0000000000000002"
    );
    // Two owner rows with the same value in one batch.
    let err = v.create(&mut db, &[text("c@x"), text("c@x")], &[id(3), id(4)]).unwrap_err();
    assert!(matches!(err, Error::LookupDuplicate { .. }), "{err}");
}

#[test]
fn non_unique_collects_every_keyspace_id() {
    let v = email_lookup(false);
    let mut db = MemoryBackend::default();
    v.create(&mut db, &[text("red"), text("red"), text("blue"), text("red")], &[id(5), id(3), id(1), id(5)])
        .unwrap();
    assert_eq!(db.rows.len(), 3);
    assert_eq!(
        v.map(&mut db, &[text("red"), text("blue")]).unwrap(),
        [Destination::KeyspaceIds(vec![id(3), id(5)]), Destination::KeyspaceId(id(1)),]
    );
    assert_eq!(
        v.verify(&mut db, &[text("red"), text("red"), text("blue")], &[id(3), id(1), id(1)]).unwrap(),
        [true, false, true]
    );
}

#[test]
fn a_unique_table_holding_two_ids_is_reported() {
    let v = email_lookup(true);
    let req = v.request(&[text("a")]).unwrap();
    let err = v.destinations(&req, &[vec![id(1), id(2)]]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unique lookup vindex email_idx: table lookups.user_email maps one value to 2 keyspace ids"
    );
    // The same id twice is still one.
    assert_eq!(v.destinations(&req, &[vec![id(1), id(1)]]).unwrap(), [Destination::KeyspaceId(id(1))]);
}

#[test]
fn update_moves_the_row() {
    let v = email_lookup(true);
    let mut db = MemoryBackend::default();
    v.create(&mut db, &[text("old@x")], &[id(7)]).unwrap();
    v.update(&mut db, &text("old@x"), &text("new@x"), id(7)).unwrap();
    assert_eq!(
        v.map(&mut db, &[text("old@x"), text("new@x")]).unwrap(),
        [Destination::None, Destination::KeyspaceId(id(7))]
    );
    let calls = db.calls;
    v.update(&mut db, &text("new@x"), &text("new@x"), id(7)).unwrap();
    assert_eq!(db.calls, calls, "no-op update must not touch the table");
    v.update(&mut db, &text("new@x"), &Value::Null, id(7)).unwrap();
    assert!(db.rows.is_empty());
}

#[test]
fn step_by_step_api_dedups_and_skips_nulls() {
    let v = email_lookup(false);
    let req = v.request(&[text("a"), Value::Null, text("b"), text("a")]).unwrap();
    assert_eq!(req.values(), [text("a"), text("b")]);
    let dests = v.destinations(&req, &[vec![id(1)], vec![]]).unwrap();
    assert_eq!(
        dests,
        [
            Destination::KeyspaceId(id(1)),
            Destination::None,
            Destination::None,
            Destination::KeyspaceId(id(1)),
        ]
    );
    assert!(matches!(
        v.destinations(&req, &[vec![id(1)]]),
        Err(Error::LookupResultCount { expected: 2, got: 1, .. })
    ));
    // An all-NULL batch never reaches the backend.
    let mut db = MemoryBackend::default();
    assert_eq!(v.map(&mut db, &[Value::Null]).unwrap(), [Destination::None]);
    assert_eq!(db.calls, 0);
}

#[test]
fn backend_errors_and_wrong_types_are_wrapped() {
    struct Down;
    impl LookupBackend for Down {
        fn lookup(
            &mut self,
            _: &LookupTable,
            _: &[Value],
        ) -> std::result::Result<Vec<Vec<KeyspaceId>>, BackendError> {
            Err("connection refused".into())
        }
        fn create(&mut self, _: &LookupTable, _: &[LookupRow]) -> std::result::Result<(), BackendError> {
            Err("connection refused".into())
        }
        fn delete(&mut self, _: &LookupTable, _: &[LookupRow]) -> std::result::Result<(), BackendError> {
            Err("connection refused".into())
        }
    }
    let v = email_lookup(true);
    let err = v.map(&mut Down, &[text("a")]).unwrap_err();
    assert_eq!(err.to_string(), "lookup vindex email_idx: backend error on table lookups.user_email");
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert_eq!(source, "connection refused");
    assert!(v.create(&mut Down, &[text("a")], &[id(1)]).is_err());
    assert!(v.delete(&mut Down, &[text("a")], &[id(1)]).is_err());
    assert!(matches!(
        v.map(&mut MemoryBackend::default(), &[Value::Int(1)]),
        Err(Error::WrongValueType { .. })
    ));
    assert!(matches!(
        v.create(&mut MemoryBackend::default(), &[text("a")], &[]),
        Err(Error::LengthMismatch { .. })
    ));
}
