//! pg-router as a pass-through proxy: real PostgreSQL 15 behind it, real clients in front.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use pg_router_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn simple_and_extended_queries_with_common_types() {
    let r = Router::start(RouterOptions::default());
    let c = r.connect().await.unwrap();
    // Several statements in one simple Query.
    let msgs = c.simple_query("select 1 as a; select 'x' as b, null as c").await.unwrap();
    let rows: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get(0), Some("1"));
    assert_eq!(rows[1].get(0), Some("x"));
    assert_eq!(rows[1].get(1), None);

    let row = c
        .query_one(
            "select $1::int2, $2::int4, $3::int8, $4::float4, $5::float8, $6::text, $7::bytea, $8::bool, \
             $9::varchar, '2024-02-29 12:34:56.789+00'::timestamptz, '12.50'::numeric::text, \
             array[1,2,3]::int4[], '{\"k\": 1}'::jsonb::text, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid::text",
            &[&-3i16, &42i32, &(1i64 << 40), &1.5f32, &-2.25f64, &"héllo", &vec![0u8, 255, 7], &true, &"v"],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i16>(0), -3);
    assert_eq!(row.get::<_, i32>(1), 42);
    assert_eq!(row.get::<_, i64>(2), 1 << 40);
    assert_eq!(row.get::<_, f32>(3), 1.5);
    assert_eq!(row.get::<_, f64>(4), -2.25);
    assert_eq!(row.get::<_, &str>(5), "héllo");
    assert_eq!(row.get::<_, Vec<u8>>(6), vec![0u8, 255, 7]);
    assert!(row.get::<_, bool>(7));
    assert_eq!(row.get::<_, &str>(8), "v");
    let ts: std::time::SystemTime = row.get(9);
    assert_eq!(ts.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis(), 1_709_210_096_789);
    assert_eq!(row.get::<_, &str>(10), "12.50");
    assert_eq!(row.get::<_, Vec<i32>>(11), vec![1, 2, 3]);
    assert_eq!(row.get::<_, &str>(12), "{\"k\": 1}");
    assert_eq!(row.get::<_, &str>(13), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");

    // Errors keep every field and leave the session usable.
    let err = c.query("select 1/0", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("22012"));
    let err = c.simple_query("selec 1").await.unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code().code(), "42601");
    assert!(db.position().is_some());
    assert_eq!(c.query_one("select 2", &[]).await.unwrap().get::<_, i32>(0), 2);
}

#[tokio::test]
async fn prepared_statements_survive_transaction_pooling() {
    let r = Router::start(RouterOptions { pool_max_size: 3, ..Default::default() });
    let a = r.connect().await.unwrap();
    let b = r.connect().await.unwrap();
    let sa = a.prepare("select $1::int4 + 1").await.unwrap();
    let sb = b.prepare("select $1::int4 * 10").await.unwrap();
    // Interleave so each statement runs on whatever backend is free.
    for i in 0..50 {
        assert_eq!(a.query_one(&sa, &[&i]).await.unwrap().get::<_, i32>(0), i + 1);
        assert_eq!(b.query_one(&sb, &[&i]).await.unwrap().get::<_, i32>(0), i * 10);
    }
    // Same text from two clients: one global statement, both work.
    let sa2 = a.prepare("select $1::int4 * 10").await.unwrap();
    assert_eq!(a.query_one(&sa2, &[&7]).await.unwrap().get::<_, i32>(0), 70);
    // A statement that fails to prepare is reported at Parse and does not linger.
    let err = a.prepare("select * from no_such_table").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("42P01"));
    // Inside an explicit transaction as well.
    let mut a = a;
    let tx = a.transaction().await.unwrap();
    assert_eq!(tx.query_one(&sa, &[&1]).await.unwrap().get::<_, i32>(0), 2);
    tx.commit().await.unwrap();
    drop(sa);
    assert_eq!(a.query_one("select 5", &[]).await.unwrap().get::<_, i32>(0), 5);
}

#[tokio::test]
async fn session_state_does_not_leak_between_clients() {
    // One backend connection, so both clients must share it.
    let r = Router::start(RouterOptions { pool_max_size: 1, ..Default::default() });
    let a = r.connect().await.unwrap();
    let b = r.connect().await.unwrap();
    a.batch_execute("SET statement_timeout = '123s'").await.unwrap();
    assert_eq!(show(&a).await, "123s");
    assert_eq!(show(&b).await, "0");
    assert_eq!(show(&a).await, "123s", "a's setting follows it to the next backend checkout");
    a.batch_execute("RESET statement_timeout").await.unwrap();
    assert_eq!(show(&a).await, "0");
    // A temporary table is cleaned up before the connection serves someone else.
    a.batch_execute("CREATE TEMP TABLE scratch (x int)").await.unwrap();
    let n: i64 = b
        .query_one("select count(*) from pg_class where relname = 'scratch' and relpersistence = 't'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // What transaction pooling cannot do is refused with 0A000.
    for sql in ["LISTEN chan", "select pg_advisory_lock(1)", "PREPARE p AS select 1", "SET ROLE postgres"] {
        let err = a.batch_execute(sql).await.unwrap_err();
        assert_eq!(sqlstate(&err).as_deref(), Some("0A000"), "{sql}");
    }
    // Inside a transaction the refusal aborts it, as an error would on PostgreSQL.
    a.batch_execute("BEGIN").await.unwrap();
    assert!(a.batch_execute("LISTEN chan").await.is_err());
    let err = a.batch_execute("select 1").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("25P02"));
    a.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(a.query_one("select 3", &[]).await.unwrap().get::<_, i32>(0), 3);
}

async fn show(c: &tokio_postgres::Client) -> String {
    c.query_one("show statement_timeout", &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn session_pool_mode_pins_a_backend() {
    let r = Router::start(RouterOptions { pool_mode: "session", ..Default::default() });
    let a = r.connect().await.unwrap();
    a.batch_execute("LISTEN chan; SET application_name = 'pinned'").await.unwrap();
    let pid1: i32 = a.query_one("select pg_backend_pid()", &[]).await.unwrap().get(0);
    let pid2: i32 = a.query_one("select pg_backend_pid()", &[]).await.unwrap().get(0);
    assert_eq!(pid1, pid2);
}

#[tokio::test]
async fn session_mode_delivers_notifications_to_an_idle_client() {
    // A session-mode backend is watched while it owes no reply: notifications arrive unprompted.
    let r = Router::start(RouterOptions { pool_mode: "session", ..Default::default() });
    let (a, mut conn) = r.config(APP_USER, APP_PASSWORD).connect(tokio_postgres::NoTls).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(m)) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = tx.send(n.payload().to_owned());
            }
        }
    });
    a.batch_execute("LISTEN idle_chan").await.unwrap();
    let b = r.connect().await.unwrap();
    b.batch_execute("NOTIFY idle_chan, 'hello'").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("no notification");
    assert_eq!(got.as_deref(), Some("hello"));
}

#[tokio::test]
async fn copy_in_and_out_100k_rows_byte_for_byte() {
    use futures_util::{SinkExt, StreamExt};
    let r = Router::start(RouterOptions::default());
    let c = r.connect().await.unwrap();
    c.batch_execute(
        "DROP TABLE IF EXISTS copy_t; CREATE TABLE copy_t (id int primary key, name text, v float8)",
    )
    .await
    .unwrap();
    let mut data = Vec::new();
    for i in 0..100_000 {
        data.extend_from_slice(format!("{i}\tname-{i}-\u{e9}\t{}.5\n", i % 977).as_bytes());
    }
    let sink = c.copy_in("COPY copy_t FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    for chunk in data.chunks(64 * 1024) {
        sink.send(bytes::Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 100_000);
    let stream = c.copy_out("COPY (SELECT * FROM copy_t ORDER BY id) TO STDOUT").await.unwrap();
    futures_util::pin_mut!(stream);
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(out.len(), data.len());
    assert!(out == data, "COPY OUT differs from what COPY IN loaded");
    // A failing COPY leaves the session usable.
    let sink = c.copy_in("COPY copy_t FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"1\tdup\t1\n")).await.unwrap();
    let err = sink.finish().await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("23505"));
    assert_eq!(c.query_one("select count(*) from copy_t", &[]).await.unwrap().get::<_, i64>(0), 100_000);
}

#[tokio::test]
async fn cancel_reaches_the_backend() {
    let r = Router::start(RouterOptions::default());
    assert_cancel_stops_a_sleep(r.connect().await.unwrap()).await;
}

#[tokio::test]
async fn authentication_errors_have_postgres_sqlstates() {
    let r = Router::start(RouterOptions::default());
    let err = connect(r.config(APP_USER, "wrong")).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28P01"));
    let err = connect(r.config("nobody", "x")).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"));
    let mut cfg = r.config(APP_USER, APP_PASSWORD);
    cfg.dbname("nodb");
    let err = connect(cfg).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("3D000"));
    // md5 users work, and a wrong md5 password is refused.
    let c = connect(r.config(MD5_USER, MD5_PASSWORD)).await.unwrap();
    assert_eq!(c.query_one("select 1", &[]).await.unwrap().get::<_, i32>(0), 1);
    let err = connect(r.config(MD5_USER, "nope")).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28P01"));
}

#[tokio::test]
async fn psql_over_tls_with_scram() {
    let r = Router::start(RouterOptions { tls: true, tls_required: true, ..Default::default() });
    let (ok, out) = run_tool(
        "psql",
        &["-X", "-At", &r.conninfo("sslmode=require"), "-c", "\\conninfo", "-c", "select 40 + 2"],
    );
    assert!(ok, "{out}");
    assert!(out.contains("SSL connection"), "{out}");
    assert!(out.contains("42"), "{out}");
    let (ok, out) = run_tool("psql", &["-X", "-At", &r.conninfo("sslmode=disable"), "-c", "select 1"]);
    assert!(!ok);
    assert!(out.contains("requires TLS"), "{out}");
}

/// Sends raw bytes as a logged-in client and returns what comes back until EOF.
/// A raw connection logged in as the md5 user with a hand-made exchange, after ReadyForQuery.
/// Cancels a `pg_sleep(30)` running on `c` through its cancel token: the sleep must end with
/// 57014.
async fn assert_cancel_stops_a_sleep(c: tokio_postgres::Client) {
    let token = c.cancel_token();
    let q = tokio::spawn(async move { c.simple_query("select pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    // Bounded so a lost cancel fails the test instead of waiting 30 s; not a speed check.
    let res =
        tokio::time::timeout(Duration::from_secs(10), q).await.expect("cancel was not delivered").unwrap();
    assert_eq!(sqlstate(&res.unwrap_err()).as_deref(), Some("57014"));
}

async fn raw_login(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut startup = BytesMut::new();
    let params = format!("user\0{MD5_USER}\0database\0{DATABASE}\0\0");
    startup.put_i32(8 + params.len() as i32);
    startup.put_i32(3 << 16);
    startup.put_slice(params.as_bytes());
    s.write_all(&startup).await.unwrap();
    let mut buf = vec![0u8; 13];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf[0], b'R');
    let salt = [buf[9], buf[10], buf[11], buf[12]];
    let hash =
        postgres_protocol::authentication::md5_hash(MD5_USER.as_bytes(), MD5_PASSWORD.as_bytes(), salt);
    let mut pw = BytesMut::new();
    postgres_protocol::message::frontend::password_message(hash.as_bytes(), &mut pw).unwrap();
    s.write_all(&pw).await.unwrap();
    // Read up to ReadyForQuery.
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !got.ends_with(&[b'Z', 0, 0, 0, 5, b'I']) {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed during login");
        got.extend_from_slice(&chunk[..n]);
    }
    s
}

/// Sends `after_login` on a fresh session and reads until the router closes it.
async fn raw_session(port: u16, after_login: &[u8]) -> Vec<u8> {
    let mut s = raw_login(port).await;
    s.write_all(after_login).await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut reply))
        .await
        .unwrap_or_else(|_| panic!("router hung after {after_login:?}"));
    reply
}

fn error_code(reply: &[u8]) -> Option<String> {
    let mut buf = BytesMut::from(reply);
    while let Ok(Some(m)) = postgres_protocol::message::backend::Message::parse(&mut buf) {
        if let postgres_protocol::message::backend::Message::ErrorResponse(body) = m {
            use fallible_iterator::FallibleIterator;
            let mut f = body.fields();
            while let Ok(Some(field)) = f.next() {
                if field.type_() == b'C' {
                    return Some(String::from_utf8_lossy(field.value_bytes()).into_owned());
                }
            }
        }
    }
    None
}

#[tokio::test]
async fn malformed_and_oversized_frames_get_errors_and_others_keep_working() {
    let r = Router::start(RouterOptions { max_message_bytes: 64 * 1024, ..Default::default() });
    let other = r.connect().await.unwrap();
    // A length field smaller than 4.
    let reply = raw_session(r.port, &[b'Q', 0, 0, 0, 2]).await;
    assert_eq!(error_code(&reply).as_deref(), Some("08P01"));
    // An advertised 1 GB message: refused without waiting for (or allocating) the body.
    let reply = raw_session(r.port, &[b'Q', 0x3f, 0xff, 0xff, 0xff, b's']).await;
    assert_eq!(error_code(&reply).as_deref(), Some("54000"));
    // A Bind whose body is truncated.
    let reply = raw_session(r.port, &[b'B', 0, 0, 0, 6, b'p', 0]).await;
    assert_eq!(error_code(&reply).as_deref(), Some("08P01"));
    // A garbage startup packet.
    let mut s = TcpStream::connect(("127.0.0.1", r.port)).await.unwrap();
    s.write_all(&[0, 0, 0, 9, 0, 9, 0, 0, 1]).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut reply)).await.unwrap().unwrap();
    assert_eq!(error_code(&reply).as_deref(), Some("08P01"));
    // Unknown message types reach PostgreSQL, which rejects them itself.
    let reply = raw_session(r.port, &[b'y', 0, 0, 0, 4]).await;
    assert_eq!(error_code(&reply).as_deref(), Some("08P01"));
    assert_eq!(other.query_one("select 7", &[]).await.unwrap().get::<_, i32>(0), 7);
}

/// A Query with bytes after its text's terminator is an error, as on PostgreSQL: the session
/// goes on, and a SET smuggled in front of the terminator is not taken for the session's
/// (it would be replayed on the next backend that serves it).
#[tokio::test]
async fn a_query_with_bytes_after_its_text_is_an_error_and_sets_nothing() {
    let r = Router::start(RouterOptions::default());
    let mut a = raw_login(r.port).await;
    let mut out = BytesMut::new();
    let body = b"SET application_name = 'smuggled'\0SELECT 1\0";
    out.put_u8(b'Q');
    out.put_i32(4 + body.len() as i32);
    out.put_slice(body);
    a.write_all(&out).await.unwrap();
    let reply = read_until_ready(&mut a, 1).await;
    assert_eq!(message_tags(&reply), "EZ");
    assert_eq!(error_code(&reply).as_deref(), Some("08P01"));
    assert!(reply.windows(22).any(|w| w == b"invalid message format"), "{reply:?}");
    // A text with no terminator at all: PostgreSQL's other message, and the session goes on.
    out.clear();
    out.put_u8(b'Q');
    out.put_i32(4 + 8);
    out.put_slice(b"SELECT 1");
    a.write_all(&out).await.unwrap();
    let reply = read_until_ready(&mut a, 1).await;
    assert_eq!(message_tags(&reply), "EZ");
    assert_eq!(error_code(&reply).as_deref(), Some("08P01"));
    assert!(reply.windows(25).any(|w| w == b"invalid string in message"), "{reply:?}");
    // Another client holds the backend that served `a`, so `a` gets another one, which is
    // brought to `a`'s settings first.
    let b = r.connect().await.unwrap();
    b.batch_execute("BEGIN; SELECT 1").await.unwrap();
    out.clear();
    postgres_protocol::message::frontend::query("SHOW application_name", &mut out).unwrap();
    a.write_all(&out).await.unwrap();
    let reply = read_until_ready(&mut a, 1).await;
    assert_eq!(message_tags(&reply), "TDCZ", "{reply:?}");
    assert!(!reply.windows(8).any(|w| w == b"smuggled"), "{}", String::from_utf8_lossy(&reply));
    b.batch_execute("ROLLBACK").await.unwrap();
}

/// The tags of the whole backend messages in `reply`, in order.
fn message_tags(reply: &[u8]) -> String {
    let mut tags = String::new();
    let mut rest = reply;
    while rest.len() >= 5 {
        let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        tags.push(char::from(rest[0]));
        rest = &rest[(1 + len).min(rest.len())..];
    }
    tags
}

/// Reads from `s` until `count` ReadyForQuery messages are in.
async fn read_until_ready(s: &mut TcpStream, count: usize) -> Vec<u8> {
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    while message_tags(&reply).matches('Z').count() < count {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("hung; so far: {}", message_tags(&reply)))
            .unwrap();
        assert!(n > 0, "closed; so far: {}", message_tags(&reply));
        reply.extend_from_slice(&chunk[..n]);
    }
    reply
}

/// Bind of the unnamed portal to the unnamed statement, with text parameters.
fn bind_unnamed(out: &mut BytesMut, params: &[&str]) {
    let text = |p: &&str, buf: &mut BytesMut| {
        buf.put_slice(p.as_bytes());
        Ok(postgres_protocol::IsNull::No)
    };
    let no_formats = std::iter::empty::<i16>;
    postgres_protocol::message::frontend::bind("", "", no_formats(), params.iter(), text, no_formats(), out)
        .map_err(|_| "bind")
        .unwrap();
}

/// Parse (unnamed, `sql`), Bind (unnamed portal, text parameters), Describe portal, Execute,
/// Sync: what most drivers send for one statement.
fn unnamed_batch(out: &mut BytesMut, sql: &str, params: &[&str]) {
    use postgres_protocol::message::frontend as fe;
    fe::parse("", sql, std::iter::empty(), out).unwrap();
    bind_unnamed(out, params);
    fe::describe(b'P', "", out).unwrap();
    fe::execute("", 0, out).unwrap();
    fe::sync(out);
}

/// Rows in `batch_copy`, read through `c`; a backend the router failed to hand back would make
/// this wait, so it must answer within 10 s.
async fn batch_copy_rows(c: &tokio_postgres::Client) -> i64 {
    tokio::time::timeout(Duration::from_secs(10), c.query_one("select count(*) from batch_copy", &[]))
        .await
        .expect("hung")
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn pipelined_extended_batches_keep_their_replies_in_order_through_errors_and_copy() {
    use postgres_protocol::message::frontend as fe;
    // One backend: a session that still held it after its batches would starve the check at
    // the end.
    let r =
        Router::start(RouterOptions { pool_max_size: 1, checkout_timeout_ms: 2000, ..Default::default() });
    let c = r.connect().await.unwrap();
    c.batch_execute("drop table if exists batch_copy; create table batch_copy (a int)").await.unwrap();
    drop(c);
    let mut s = raw_login(r.port).await;
    // Three batches in one write: a result, an error at Execute, a result again; then the
    // unnamed statement bound again without a Parse.
    let mut msgs = BytesMut::new();
    unnamed_batch(&mut msgs, "select $1::int + 1", &["41"]);
    unnamed_batch(&mut msgs, "select 1 / (random() * 0)::int", &[]);
    unnamed_batch(&mut msgs, "select 'ok'", &[]);
    bind_unnamed(&mut msgs, &[]);
    fe::execute("", 0, &mut msgs).unwrap();
    fe::sync(&mut msgs);
    s.write_all(&msgs).await.unwrap();
    let reply = read_until_ready(&mut s, 4).await;
    assert_eq!(message_tags(&reply), "12TDCZ12TEZ12TDCZ2DCZ");
    assert_eq!(error_code(&reply).as_deref(), Some("22012"));
    for row in [&[0, 1, 0, 0, 0, 2, b'4', b'2'][..], &[0, 1, 0, 0, 0, 2, b'o', b'k']] {
        let n = reply.windows(row.len()).filter(|w| *w == row).count();
        assert!(n >= 1, "{row:?} missing");
    }
    // COPY FROM STDIN through an unnamed statement: the batch's Sync is ignored in copy mode,
    // the one after CopyDone ends it.
    let mut msgs = BytesMut::new();
    fe::parse("", "copy batch_copy from stdin", std::iter::empty(), &mut msgs).unwrap();
    bind_unnamed(&mut msgs, &[]);
    fe::execute("", 0, &mut msgs).unwrap();
    fe::sync(&mut msgs);
    s.write_all(&msgs).await.unwrap();
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    while !message_tags(&reply).contains('G') {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0);
        reply.extend_from_slice(&chunk[..n]);
    }
    let mut msgs = BytesMut::new();
    msgs.put_u8(b'd');
    msgs.put_i32(4 + 4);
    msgs.put_slice(b"1\n2\n");
    fe::copy_done(&mut msgs);
    fe::sync(&mut msgs);
    s.write_all(&msgs).await.unwrap();
    reply.extend(read_until_ready(&mut s, 1).await);
    assert_eq!(message_tags(&reply), "12GCZ");
    // The session is between transactions: its one backend is back in the pool.
    let other = r.connect().await.unwrap();
    assert_eq!(batch_copy_rows(&other).await, 2);
    // And the raw session carries on.
    let mut msgs = BytesMut::new();
    unnamed_batch(&mut msgs, "select 'ok'", &[]);
    s.write_all(&msgs).await.unwrap();
    assert_eq!(message_tags(&read_until_ready(&mut s, 1).await), "12TDCZ");
    // A batch pipelined behind one whose Execute starts a COPY: PostgreSQL ignores the first
    // batch's Sync in copy mode and fails the COPY at the next Parse, in the middle of reading
    // it, so it ends the connection ("protocol synchronization was lost"). The client gets
    // both errors and the end; the backend is not given to anyone else.
    let mut msgs = BytesMut::new();
    unnamed_batch(&mut msgs, "copy batch_copy from stdin", &[]);
    unnamed_batch(&mut msgs, "select 'after'", &[]);
    s.write_all(&msgs).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut reply)).await.expect("hung").unwrap();
    assert_eq!(message_tags(&reply), "12nGEE");
    assert_eq!(error_code(&reply).as_deref(), Some("08P01"));
    let text = String::from_utf8_lossy(&reply);
    assert!(text.contains("FATAL") && text.contains("protocol synchronization was lost"), "{text}");
    // The pool's one connection was that backend: the next client gets a new one, and the
    // failed COPY added nothing.
    assert_eq!(batch_copy_rows(&other).await, 2);
    other.batch_execute("drop table batch_copy").await.unwrap();
}

#[tokio::test]
async fn query_text_in_the_client_encoding_passes_through() {
    // A client in LATIN1 sends bytes that are not UTF-8; PostgreSQL converts them, the router
    // forwards them unchanged.
    let r = Router::start(RouterOptions::default());
    let mut msgs = BytesMut::new();
    for sql in [
        &b"set client_encoding = 'LATIN1'"[..],
        b"select 'caf\xe9' as word",
        b"select 'na\xefve' = 'na\xefve'",
    ] {
        msgs.put_u8(b'Q');
        msgs.put_i32(4 + sql.len() as i32 + 1);
        msgs.put_slice(sql);
        msgs.put_u8(0);
    }
    let mut s = raw_login(r.port).await;
    s.write_all(&msgs).await.unwrap();
    let ready = |reply: &[u8]| reply.windows(5).filter(|w| w[..] == [b'Z', 0, 0, 0, 5]).count();
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    while ready(&reply) < 3 {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&reply));
        reply.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(error_code(&reply), None, "{}", String::from_utf8_lossy(&reply));
    // DataRow with one 4-byte column "caf\xe9", in LATIN1 again.
    let row = [0, 1, 0, 0, 0, 4, b'c', b'a', b'f', 0xe9];
    assert!(reply.windows(row.len()).any(|w| w == row), "{}", String::from_utf8_lossy(&reply));
    // The comparison of two LATIN1 literals came back true.
    let t = [0, 1, 0, 0, 0, 1, b't'];
    assert!(reply.windows(t.len()).any(|w| w == t), "{}", String::from_utf8_lossy(&reply));
}

#[tokio::test]
async fn statements_pipelined_before_terminate_still_run() {
    let r = Router::start(RouterOptions::default());
    let c = r.connect().await.unwrap();
    c.batch_execute("drop table if exists before_terminate; create table before_terminate (a int)")
        .await
        .unwrap();
    // Query, Query, Terminate in one write, without waiting for any reply.
    let mut msgs = BytesMut::new();
    for sql in ["insert into before_terminate values (1)", "insert into before_terminate values (2)"] {
        msgs.put_u8(b'Q');
        msgs.put_i32(4 + sql.len() as i32 + 1);
        msgs.put_slice(sql.as_bytes());
        msgs.put_u8(0);
    }
    msgs.put_slice(&[b'X', 0, 0, 0, 4]);
    let reply = raw_session(r.port, &msgs).await;
    assert_eq!(error_code(&reply), None, "{}", String::from_utf8_lossy(&reply));
    let n: i64 = c.query_one("select count(*) from before_terminate", &[]).await.unwrap().get(0);
    assert_eq!(n, 2, "both INSERTs ran, as on PostgreSQL");
    c.batch_execute("drop table before_terminate").await.unwrap();
}

#[tokio::test]
async fn killed_client_releases_its_row_lock() {
    let r = Router::start(RouterOptions::default());
    let setup = r.connect().await.unwrap();
    setup
        .batch_execute("DROP TABLE IF EXISTS locked; CREATE TABLE locked (id int primary key); INSERT INTO locked VALUES (1)")
        .await
        .unwrap();
    {
        let (client, conn) = r.config(APP_USER, APP_PASSWORD).connect(tokio_postgres::NoTls).await.unwrap();
        let task = tokio::spawn(conn);
        client.batch_execute("BEGIN; SELECT * FROM locked WHERE id = 1 FOR UPDATE").await.unwrap();
        // Kill the client: its TCP connection to the router goes away mid-transaction.
        task.abort();
        drop(client);
    }
    let other = r.connect().await.unwrap();
    let mut last = None;
    for _ in 0..100 {
        match other.batch_execute("BEGIN; SELECT * FROM locked WHERE id = 1 FOR UPDATE NOWAIT; COMMIT").await
        {
            Ok(()) => return,
            Err(e) => {
                last = sqlstate(&e);
                let _ = other.batch_execute("ROLLBACK").await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    panic!("row lock still held after the client died: {last:?}");
}

#[tokio::test]
async fn a_backend_ended_while_its_client_idles_in_a_transaction_fails_the_next_statement() {
    // In transaction mode the router does not watch a backend that owes no reply; the FATAL
    // PostgreSQL sends when the backend is terminated reaches the client with its next
    // statement, as it would on a direct connection.
    let r = Router::start(RouterOptions::default());
    let c = r.connect().await.unwrap();
    c.batch_execute("BEGIN").await.unwrap();
    let pid: i32 = c.query_one("select pg_backend_pid()", &[]).await.unwrap().get(0);
    let direct = connect(cluster().direct(0)).await.unwrap();
    let ended: bool = direct.query_one("select pg_terminate_backend($1)", &[&pid]).await.unwrap().get(0);
    assert!(ended);
    for _ in 0..100 {
        let alive = direct.query_opt("select 1 from pg_stat_activity where pid = $1", &[&pid]).await.unwrap();
        if alive.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let res =
        tokio::time::timeout(Duration::from_secs(10), c.query_one("select 1", &[])).await.expect("hung");
    let err = res.expect_err("the statement ran on a terminated backend");
    // The backend's own FATAL (57P01), or the connection closing after it.
    match sqlstate(&err).as_deref() {
        Some("57P01") | None => {}
        other => panic!("unexpected error {other:?}: {err}"),
    }
    // The router serves the next client with a healthy backend.
    let next = r.connect().await.unwrap();
    assert_eq!(next.query_one("select 3", &[]).await.unwrap().get::<_, i32>(0), 3);
}

#[tokio::test]
async fn pool_exhaustion_is_a_timely_clear_error() {
    let r = Router::start(RouterOptions { pool_max_size: 1, checkout_timeout_ms: 300, ..Default::default() });
    let holder = r.connect().await.unwrap();
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let waiter = r.connect().await.unwrap();
    let res =
        tokio::time::timeout(Duration::from_secs(10), waiter.query_one("select 1", &[])).await.expect("hung");
    let err = res.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("53300"));
    assert!(err.as_db_error().unwrap().message().contains("waiting for a connection"), "{err}");
    holder.batch_execute("COMMIT").await.unwrap();
    assert_eq!(waiter.query_one("select 1", &[]).await.unwrap().get::<_, i32>(0), 1);
}

#[tokio::test]
async fn too_many_clients_is_53300() {
    let r = Router::start(RouterOptions { max_client_connections: 2, ..Default::default() });
    let _a = r.connect().await.unwrap();
    let _b = r.connect().await.unwrap();
    let err = r.connect().await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("53300"));
}

#[tokio::test]
async fn graceful_shutdown_lets_open_transactions_finish() {
    let mut r = Router::start(RouterOptions { shutdown_timeout_ms: 10_000, ..Default::default() });
    let setup = r.connect().await.unwrap();
    setup.batch_execute("DROP TABLE IF EXISTS drain; CREATE TABLE drain (x int)").await.unwrap();
    let idle = r.connect().await.unwrap();
    let busy = r.connect().await.unwrap();
    busy.batch_execute("BEGIN; INSERT INTO drain VALUES (1)").await.unwrap();
    let done = r.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // New connections are refused; the idle client was told to go.
    assert!(TcpStream::connect(("127.0.0.1", r.port)).await.is_err());
    let err = idle.query_one("select 1", &[]).await.unwrap_err();
    assert!(err.is_closed() || sqlstate(&err).as_deref() == Some("57P01"), "{err}");
    // The open transaction can still finish and commit.
    busy.batch_execute("INSERT INTO drain VALUES (2); COMMIT").await.unwrap();
    tokio::task::spawn_blocking(move || done.join()).await.unwrap().unwrap();
    let direct = connect(cluster().direct(0)).await.unwrap();
    let n: i64 = direct.query_one("select count(*) from drain", &[]).await.unwrap().get(0);
    assert_eq!(n, 2);
}

#[tokio::test]
async fn pgbench_runs_with_every_query_mode_without_failures() {
    let r = Router::start(RouterOptions::default());
    let conn = r.conninfo("");
    let (ok, out) = run_tool("pgbench", &["-i", "-s", "1", "-q", &conn]);
    assert!(ok, "pgbench -i: {out}");
    for mode in ["simple", "extended", "prepared"] {
        for script in [&["-S"][..], &[][..]] {
            let mut args = vec!["-n", "-c", "4", "-j", "2", "-t", "200", "-M", mode];
            args.extend_from_slice(script);
            args.push(&conn);
            let (ok, out) = run_tool("pgbench", &args);
            assert!(ok, "pgbench -M {mode} {script:?}: {out}");
            assert!(out.contains("number of failed transactions: 0"), "pgbench -M {mode}: {out}");
            assert!(
                out.contains("number of transactions actually processed: 800/800"),
                "pgbench -M {mode}: {out}"
            );
        }
    }
}

#[tokio::test]
async fn metrics_endpoint_exports_router_metrics() {
    let r = Router::start(RouterOptions { metrics: true, ..Default::default() });
    let c = r.connect().await.unwrap();
    c.query_one("select 1", &[]).await.unwrap();
    let _ = connect(r.config(APP_USER, "wrong")).await;
    let port = r.metrics_port.unwrap();
    // Under `cargo test` (one process for the file) the endpoint is shared with the test below,
    // whose stalled connections fill it for a while: scrape until answered.
    let mut body = String::new();
    for _ in 0..250 {
        body.clear();
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await {
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").await.unwrap();
            s.read_to_string(&mut body).await.unwrap();
            if body.starts_with("HTTP/1.0 200 ") || body.starts_with("HTTP/1.1 200 ") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for name in [
        "pg_router_client_connections",
        "pg_router_statements_total",
        "pg_router_query_duration_seconds",
        "pg_router_pool_checkout_seconds",
        "pg_router_errors_total{kind=\"auth_failed\"}",
    ] {
        assert!(body.contains(name), "{name} missing from:\n{body}");
    }
}

/// Everything the server sends on `s` until it closes it (the test fails if it stays open
/// longer than `within`).
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(within, s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server kept the connection open: {}", String::from_utf8_lossy(&out));
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn metrics_endpoint_limits_its_connections_and_closes_stalled_ones() {
    // The endpoint shares the router's file descriptors: clients that connect and send
    // nothing must not pile up.
    let r = Router::start(RouterOptions { metrics: true, ..Default::default() });
    let addr = ("127.0.0.1", r.metrics_port.unwrap());
    let mut stalled = Vec::new();
    for _ in 0..16 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n").await.unwrap();
        stalled.push(s);
    }
    let mut over = TcpStream::connect(addr).await.unwrap();
    let reply = read_until_closed(&mut over, Duration::from_secs(5)).await;
    assert!(reply.starts_with("HTTP/1.1 503 "), "{reply}");
    assert!(reply.contains("too many connections to this metrics endpoint"), "{reply}");
    // The stalled ones are closed when their 10 s for headers are up, freeing their slots.
    for s in &mut stalled {
        let reply = read_until_closed(s, Duration::from_secs(20)).await;
        assert!(!reply.contains(" 200 "), "{reply}");
    }
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
    let reply = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    assert!(reply.contains("content-type: text/plain; version=0.0.4"), "{reply}");
    assert!(reply.contains("pg_router_client_connections"), "{reply}");
    assert!(reply.contains("content-length: "), "{reply}");
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
    let reply = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(reply.starts_with("HTTP/1.1 405 "), "{reply}");
    assert!(reply.contains("allow: GET, HEAD"), "{reply}");
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /other HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
    let reply = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(reply.starts_with("HTTP/1.1 404 "), "{reply}");
}

#[tokio::test]
async fn backend_tls_is_verified_and_used() {
    let c = cluster();
    let ca = c.enable_tls(1).unwrap();
    let shard = |port: u16, ca: &std::path::Path| {
        format!(
            "\n[[shards]]\nname = \"s0\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"require\"\ntls_ca_file = \"{}\"\n",
            ca.display()
        )
    };
    let r = Router::start(RouterOptions {
        shards_toml: Some(shard(c.ports[1], &ca)),
        ..RouterOptions::default()
    });
    let client = r.connect().await.unwrap();
    let sql = "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    for _ in 0..3 {
        let row = client.query_one(sql, &[]).await.unwrap();
        assert!(row.get::<_, bool>(0), "the backend connection is not encrypted");
        assert!(row.get::<_, String>(1).starts_with("TLS"));
    }
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS tls_t (id int); BEGIN; INSERT INTO tls_t VALUES (1); COMMIT",
        )
        .await
        .unwrap();
    let n: i64 = client.query_one("SELECT count(*) FROM tls_t WHERE id = $1", &[&1i32]).await.unwrap().get(0);
    assert!(n >= 1);

    // A CA that did not sign the shard's certificate: the handshake fails, clearly.
    let wrong_ca = &test_cert().0;
    let r = Router::start(RouterOptions {
        shards_toml: Some(shard(c.ports[1], wrong_ca)),
        ..RouterOptions::default()
    });
    let err = r.connect().await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("08001"), "{err:?}");
    let message = err.as_db_error().map(|e| e.message().to_owned()).unwrap_or_default();
    assert!(message.contains("TLS handshake with shard s0 failed"), "{err:?}");

    // A server without TLS: refused as such, never a silent plaintext connection.
    let r = Router::start(RouterOptions {
        shards_toml: Some(shard(c.ports[0], &ca)),
        ..RouterOptions::default()
    });
    let err = r.connect().await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("08001"), "{err:?}");
    let message = err.as_db_error().map(|e| e.message().to_owned()).unwrap_or_default();
    assert!(message.contains("shard s0 refused TLS"), "{err:?}");
}

#[tokio::test]
async fn a_shard_is_reached_through_its_unix_socket() {
    let c = cluster();
    let shard = |dir: &std::path::Path| {
        format!("\n[[shards]]\nname = \"s0\"\nhost = \"{}\"\nport = {}\n", dir.display(), c.ports[0])
    };
    let r =
        Router::start(RouterOptions { shards_toml: Some(shard(&c.data_dir(0))), ..RouterOptions::default() });
    let client = r.connect().await.unwrap();
    // inet_server_addr() is NULL on a connection that came in through the Unix socket.
    let sql = "SELECT inet_server_addr()::text, current_setting('port'), $1::int + 1";
    for i in 0..3 {
        let row = client.query_one(sql, &[&i]).await.unwrap();
        assert_eq!(row.get::<_, Option<String>>(0), None, "the backend connection is not the Unix socket");
        assert_eq!(row.get::<_, String>(1), c.ports[0].to_string());
        assert_eq!(row.get::<_, i32>(2), i + 1);
    }
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS unix_t (id int); BEGIN; INSERT INTO unix_t VALUES (1); COMMIT",
        )
        .await
        .unwrap();
    let n: i64 = client.query_one("SELECT count(*) FROM unix_t WHERE id = 1", &[]).await.unwrap().get(0);
    assert!(n >= 1);

    // A cancel is relayed through the socket too.
    assert_cancel_stops_a_sleep(client).await;

    // A directory where no server listens: a clear connection error naming the socket file.
    let nowhere = c.dir.join("no-server-here");
    let r = Router::start(RouterOptions { shards_toml: Some(shard(&nowhere)), ..RouterOptions::default() });
    let err = r.connect().await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("08001"), "{err:?}");
    let message = err.as_db_error().map(|e| e.message().to_owned()).unwrap_or_default();
    let socket = format!("{}/.s.PGSQL.{}", nowhere.display(), c.ports[0]);
    assert!(message.contains("cannot connect to shard s0 at") && message.contains(&socket), "{err:?}");
}
