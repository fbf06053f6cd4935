"""psycopg 3 (libpq underneath) through pg-router in transaction pooling mode.

Usage: psycopg_client.py plain|sharded, connection parameters from the environment (common.py).
Exits 1 with "CHECK FAILED: ..." on the first check that does not hold.
"""

import datetime
import threading
import time
import uuid
from decimal import Decimal

import psycopg
from psycopg import errors, pq
from psycopg.types.json import Jsonb
from psycopg.types.numeric import Int2, Int8

from common import CONN, Timer, check, equal, fail, main, step


def connect(autocommit=True, **over):
    kw = dict(
        host=CONN.host,
        port=CONN.port,
        user=CONN.user,
        password=CONN.password,
        dbname=CONN.dbname,
        sslmode=CONN.sslmode,
        connect_timeout=10,
        # Proves the router asked for SCRAM (libpq refuses any other method).
        require_auth="scram-sha-256",
    )
    kw.update(over)
    return psycopg.connect(autocommit=autocommit, **kw)


def scalar(conn, sql, params=None, **kw):
    return conn.execute(sql, params, **kw).fetchone()[0]


def expect_error(cls, sqlstate, fn, what):
    try:
        fn()
    except cls as e:
        equal(e.sqlstate, sqlstate, f"{what}: SQLSTATE")
        return e
    fail(f"{what}: no {cls.__name__} raised")


UTC = datetime.timezone.utc
TYPES = [
    # (column type, value, psycopg wrapper or None)
    ("int2", -32768, Int2),
    ("int4", 2147483647, None),
    ("int8", -(1 << 62), Int8),
    ("numeric", Decimal("12345678901234567890.123456789"), None),
    ("float8", 0.1 + 0.2, None),
    ("text", "h\u00e9llo\tworld \U0001f600 'quoted'", None),
    ("bytea", bytes(range(256)), None),
    ("bool", True, None),
    ("timestamptz", datetime.datetime(2024, 2, 29, 12, 34, 56, 789123, tzinfo=UTC), None),
    ("date", datetime.date(1999, 12, 31), None),
    ("uuid", uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), None),
    ("jsonb", {"k": [1, 2, {"x": None}], "s": "\u00fc"}, Jsonb),
    ("int4[]", [1, None, 3], None),
    ("text[]", ["a", "b c", None, 'q"uote'], None),
    ("text", None, None),
]


def adapted(v, wrap):
    return wrap(v) if wrap else v


def check_types(conn):
    step("types: parameters in text and binary, results in text and binary")
    casts = ", ".join(f"%s::{t}" for t, _, _ in TYPES)
    params = [adapted(v, w) for _, v, w in TYPES]
    for binary in (False, True):
        row = conn.cursor(binary=binary).execute(f"SELECT {casts}", params).fetchone()
        for (t, v, _), got in zip(TYPES, row):
            equal(got, v, f"{t} round trip (binary={binary})")
    step("types: through a table")
    cols = ", ".join(f"c{i} {t}" for i, (t, _, _) in enumerate(TYPES))
    conn.execute("DROP TABLE IF EXISTS psy_types")
    conn.execute(f"CREATE TABLE psy_types (id int PRIMARY KEY, {cols})")
    marks = ", ".join(["%s"] * (len(TYPES) + 1))
    conn.execute(f"INSERT INTO psy_types VALUES ({marks})", [1] + params)
    conn.cursor(binary=True).execute(f"INSERT INTO psy_types VALUES ({marks})", [2] + params)
    for binary in (False, True):
        rows = conn.cursor(binary=binary).execute("SELECT * FROM psy_types ORDER BY id").fetchall()
        equal(len(rows), 2, "rows in psy_types")
        for row in rows:
            for (t, v, _), got in zip(TYPES, row[1:]):
                equal(got, v, f"{t} stored and read back (binary={binary})")
    step("simple query protocol: several statements in one Query")
    cur = psycopg.ClientCursor(conn)
    cur.execute("SELECT 1 AS a; SELECT %s::text AS b, NULL AS c", ["x'y"])
    equal(cur.fetchone(), (1,), "first result of a multi-statement Query")
    check(cur.nextset(), "second result of a multi-statement Query missing")
    equal(cur.fetchone(), ("x'y", None), "second result of a multi-statement Query")


def distinct_backends(conn, run_once, rounds=40):
    """Runs `run_once(i)` -> backend pid `rounds` times in separate transactions while other
    connections take and release backends, so the statement lands on several backends."""
    holders = [connect(autocommit=False) for _ in range(2)]
    pids = set()
    try:
        for i in range(rounds):
            pids.add(run_once(i))
            h = holders[i % 2]
            if h.info.transaction_status == pq.TransactionStatus.IDLE:
                h.execute("SELECT pg_backend_pid()")  # opens a transaction: holds a backend
            else:
                h.rollback()
    finally:
        for h in holders:
            h.close()
    return pids


def check_prepared(conn):
    step("server-side prepared statements (prepare=True) across transactions and backends")

    def once(i):
        row = conn.execute("SELECT %s::int4 * 2, pg_backend_pid()", [i], prepare=True).fetchone()
        equal(row[0], i * 2, "prepared statement result")
        return row[1]

    pids = distinct_backends(conn, once)
    check(len(pids) >= 2, f"prepared statement ran on one backend only ({pids}); the check needs several")

    step("prepare_threshold=0: every statement prepared; cache eviction sends Close")
    c = connect(prepare_threshold=0)
    c.prepared_max = 3
    for round_ in range(4):
        for k in range(6):
            equal(scalar(c, f"SELECT %s::int + {k}", [round_]), round_ + k, "evicted statement re-prepared")
    c.close()

    step("default prepare_threshold (5): prepared after the fifth execution")
    c = connect()
    for i in range(20):
        equal(scalar(c, "SELECT length(%s::text)", ["x" * i]), i, "statement prepared by threshold")
    c.close()


def check_transactions(conn):
    step("transactions: commit, rollback, savepoint")
    conn.execute("DROP TABLE IF EXISTS psy_t")
    conn.execute("CREATE TABLE psy_t (id int PRIMARY KEY, v text)")
    tx = connect(autocommit=False)
    tx.execute("INSERT INTO psy_t VALUES (1, 'committed')")
    tx.commit()
    tx.execute("INSERT INTO psy_t VALUES (2, 'rolled back')")
    equal(scalar(tx, "SELECT count(*) FROM psy_t"), 2, "a transaction sees its own insert")
    tx.rollback()
    equal(scalar(conn, "SELECT count(*) FROM psy_t WHERE id = 2"), 0, "rolled-back insert visible")
    equal(scalar(conn, "SELECT v FROM psy_t WHERE id = 1"), "committed", "committed insert")
    with tx.transaction():
        tx.execute("INSERT INTO psy_t VALUES (3, 'outer')")
        with tx.transaction(force_rollback=True):  # a savepoint, rolled back
            tx.execute("INSERT INTO psy_t VALUES (4, 'inner')")
    equal(
        [r[0] for r in conn.execute("SELECT id FROM psy_t ORDER BY id")],
        [1, 3],
        "rows after savepoint rollback",
    )

    step("error inside a transaction: 22012, then 25P02, ROLLBACK, connection usable")
    tx.execute("INSERT INTO psy_t VALUES (5, 'doomed')")
    expect_error(errors.DivisionByZero, "22012", lambda: tx.execute("SELECT 1/0"), "1/0")
    expect_error(errors.InFailedSqlTransaction, "25P02", lambda: tx.execute("SELECT 1"), "after error")
    tx.rollback()
    equal(scalar(tx, "SELECT count(*) FROM psy_t WHERE id = 5"), 0, "insert before the error")
    tx.commit()
    tx.close()


def check_pipeline(conn):
    step("pipeline mode: many statements before one Sync; executemany; an error mid-pipeline")
    conn.execute("DROP TABLE IF EXISTS psy_pipe")
    conn.execute("CREATE TABLE psy_pipe (id int PRIMARY KEY, v text)")
    with conn.pipeline() as p:
        cur = conn.cursor()
        for i in range(50):
            conn.execute("INSERT INTO psy_pipe VALUES (%s, %s)", [i, f"v{i}"])
        cur.execute("SELECT count(*), max(v) FROM psy_pipe")
        p.sync()
        equal(cur.fetchone(), (50, "v9"), "count after pipelined inserts")
    cur = conn.cursor()
    cur.executemany(
        "INSERT INTO psy_pipe VALUES (%s, %s) RETURNING id", [(i, f"m{i}") for i in range(100, 150)], returning=True
    )
    ids = []
    while True:
        ids.append(cur.fetchone()[0])
        if not cur.nextset():
            break
    equal(ids, list(range(100, 150)), "executemany RETURNING ids")
    try:
        with conn.pipeline() as p:
            conn.execute("INSERT INTO psy_pipe VALUES (1000, 'a')")
            p.sync()
            conn.execute("INSERT INTO psy_pipe VALUES (999, 'rolled back with the error')")
            conn.execute("INSERT INTO psy_pipe VALUES (1, 'duplicate')")
            conn.execute("INSERT INTO psy_pipe VALUES (1001, 'skipped')")
        fail("duplicate key in a pipeline raised nothing")
    except errors.UniqueViolation as e:
        equal(e.sqlstate, "23505", "pipeline error")
    # Statements between two Syncs form one implicit transaction: the error undoes 999 too,
    # and 1001 after it never runs; 1000 was committed by the earlier Sync.
    equal(
        [r[0] for r in conn.execute("SELECT id FROM psy_pipe WHERE id >= 999 ORDER BY id")],
        [1000],
        "statements after the pipeline error",
    )
    equal(scalar(conn, "SELECT count(*) FROM psy_pipe"), 101, "rows after the pipeline")


def check_copy(conn):
    step("COPY FROM STDIN (text and binary), COPY TO STDOUT, failing COPY")
    conn.execute("DROP TABLE IF EXISTS psy_copy")
    conn.execute("CREATE TABLE psy_copy (id int PRIMARY KEY, name text, data bytea, ts timestamptz)")
    base = datetime.datetime(2024, 1, 1, tzinfo=UTC)
    rows = [(i, f"name-{i}-\u00e9\t\\", bytes([i % 256, 0, 255]), base + datetime.timedelta(seconds=i)) for i in range(5000)]
    cur = conn.cursor()
    with cur.copy("COPY psy_copy (id, name, data, ts) FROM STDIN") as cp:
        for r in rows[:2500]:
            cp.write_row(r)
    equal(cur.rowcount, 2500, "text COPY row count")
    with cur.copy("COPY psy_copy (id, name, data, ts) FROM STDIN (FORMAT BINARY)") as cp:
        cp.set_types(["int4", "text", "bytea", "timestamptz"])
        for r in rows[2500:]:
            cp.write_row(r)
    equal(cur.rowcount, 2500, "binary COPY row count")
    for fmt in ("", " (FORMAT BINARY)"):
        with cur.copy(f"COPY (SELECT id, name, data, ts FROM psy_copy ORDER BY id) TO STDOUT{fmt}") as cp:
            cp.set_types(["int4", "text", "bytea", "timestamptz"])
            out = list(cp.rows())
        equal(len(out), len(rows), f"COPY TO rows{fmt}")
        check(out == rows, f"COPY TO{fmt} returned different rows than were loaded")
    try:
        with cur.copy("COPY psy_copy (id, name) FROM STDIN") as cp:
            cp.write_row((7, "duplicate"))
        fail("duplicate key in COPY raised nothing")
    except errors.UniqueViolation:
        pass
    equal(scalar(conn, "SELECT count(*) FROM psy_copy"), 5000, "rows after the failed COPY")


def check_cancel(conn):
    for how in ("cancel", "cancel_safe"):
        step(f"query cancel with conn.{how}() on pg_sleep(30)")
        c = connect()
        t = threading.Timer(0.5, getattr(c, how))
        t.start()
        with Timer() as tm:
            expect_error(errors.QueryCanceled, "57014", lambda: c.execute("SELECT pg_sleep(30)"), how)
        t.join()
        check(tm.elapsed < 10, f"{how}: the query ran {tm.elapsed:.1f}s before it was cancelled")
        equal(scalar(c, "SELECT 42"), 42, f"connection usable after {how}")
        c.close()
    step("statement_timeout set by the client (replayed on each backend) cancels with 57014")
    c = connect()
    c.execute("SET statement_timeout = '300ms'")
    with Timer() as tm:
        expect_error(errors.QueryCanceled, "57014", lambda: c.execute("SELECT pg_sleep(10)"), "statement_timeout")
    check(tm.elapsed < 5, f"statement_timeout took {tm.elapsed:.1f}s")
    c.execute("RESET statement_timeout")
    equal(scalar(c, "SHOW statement_timeout"), "0", "statement_timeout after RESET")
    c.close()


def check_session_features(conn):
    step("session settings follow the client; ParameterStatus reaches the driver")
    conn.execute("SET TimeZone = 'Asia/Tokyo'")
    equal(conn.info.parameter_status("TimeZone"), "Asia/Tokyo", "TimeZone ParameterStatus")
    for _ in range(3):
        ts = scalar(conn, "SELECT '2024-01-01 00:00:00+00'::timestamptz")
        equal(ts.utcoffset(), datetime.timedelta(hours=9), "timestamptz offset in the session time zone")
    conn.execute("RESET TimeZone")

    step("what transaction pooling refuses fails fast with 0A000 and a clear message")
    for sql, hint in [
        ("LISTEN psy_chan", "session pooling"),
        ("SELECT pg_advisory_lock(1)", "pg_advisory_xact_lock"),
        ("PREPARE psy_p AS SELECT 1", "protocol-level"),
    ]:
        with Timer() as tm:
            e = expect_error(errors.FeatureNotSupported, "0A000", lambda: conn.execute(sql), sql)
        check(hint in str(e), f"{sql}: message {str(e)!r} does not mention {hint!r}")
        check(tm.elapsed < 5, f"{sql}: refusal took {tm.elapsed:.1f}s")
        equal(scalar(conn, "SELECT 1"), 1, f"connection usable after {sql}")
    # In a transaction the refusal aborts it, as any error would.
    tx = connect(autocommit=False)
    expect_error(errors.FeatureNotSupported, "0A000", lambda: tx.execute("LISTEN psy_chan"), "LISTEN in a transaction")
    expect_error(errors.InFailedSqlTransaction, "25P02", lambda: tx.execute("SELECT 1"), "after LISTEN")
    tx.rollback()
    equal(scalar(tx, "SELECT 2"), 2, "usable after ROLLBACK")
    tx.close()

    step("server-side cursor (DECLARE/FETCH) inside a transaction")
    tx = connect(autocommit=False)
    with tx.cursor(name="psy_cursor") as sc:
        sc.itersize = 100
        sc.execute("SELECT g FROM generate_series(1, 1000) g")
        equal(sum(r[0] for r in sc), 500500, "sum over the named cursor")
    tx.commit()
    tx.close()


def check_login():
    step("SCRAM login; wrong password is 28P01; md5 user")
    c = connect()
    equal(scalar(c, "SELECT 1"), 1, "SELECT 1")
    if CONN.sslmode != "disable":
        check(c.pgconn.ssl_in_use, f"sslmode={CONN.sslmode} but the connection is not encrypted")
    c.close()
    try:
        connect(password="wrong").close()
        fail("wrong password accepted")
    except psycopg.OperationalError as e:
        # libpq reports connection failures as text only; 28P01's message is PostgreSQL's.
        msg = str(e)
        check(f'password authentication failed for user "{CONN.user}"' in msg, f"wrong password: {msg!r}")
    c = connect(user=CONN.md5_user, password=CONN.md5_password, require_auth="md5")
    equal(scalar(c, "SELECT 1"), 1, "md5 login")
    c.close()
    if CONN.sslrootcert:
        step("TLS verify-full against the CA file, host name localhost")
        c = connect(host="localhost", hostaddr="127.0.0.1", sslmode="verify-full", sslrootcert=CONN.sslrootcert)
        check(c.pgconn.ssl_in_use, "verify-full connection not encrypted")
        equal(scalar(c, "SELECT 3"), 3, "query over verify-full")
        c.close()


def plain():
    check_login()
    conn = connect()
    check_types(conn)
    check_prepared(conn)
    check_transactions(conn)
    check_pipeline(conn)
    check_copy(conn)
    check_cancel(conn)
    check_session_features(conn)
    conn.close()


def sharded():
    check_login()
    conn = connect()
    step("sharded: DDL through the router, inserts with parameters across shards")
    conn.execute("DROP TABLE IF EXISTS psy_users")
    conn.execute(
        "CREATE TABLE psy_users (id bigint PRIMARY KEY, name text NOT NULL, score numeric(10,2), "
        "created timestamptz)"
    )
    base = datetime.datetime(2024, 1, 1, tzinfo=UTC)
    data = {i: (f"user{i}", Decimal(i * 7 % 50) + Decimal("0.25"), base + datetime.timedelta(days=i)) for i in range(1, 61)}
    cur = conn.cursor()
    for i in range(1, 31):
        cur.execute("INSERT INTO psy_users (id, name, score, created) VALUES (%s, %s, %s, %s)", [i, *data[i]])
        equal(cur.rowcount, 1, f"insert {i}")
    cur.executemany(
        "INSERT INTO psy_users (id, name, score, created) VALUES (%s, %s, %s, %s)",
        [(i, *data[i]) for i in range(31, 61)],
    )
    equal(scalar(conn, "SELECT count(*) FROM psy_users"), 60, "count(*) over all shards")

    step("sharded: point selects by key with a prepared statement")
    for i in range(1, 61):
        row = conn.execute("SELECT name, score, created FROM psy_users WHERE id = %s", [i], prepare=True).fetchone()
        equal(row, data[i], f"point select id={i}")
    for binary in (False, True):
        row = conn.cursor(binary=binary).execute("SELECT name FROM psy_users WHERE id = %s", [Int8(42)]).fetchone()
        equal(row, ("user42",), f"point select with an int8 parameter (binary={binary})")

    step("sharded: scatter ORDER BY ... LIMIT, aggregates")
    want = sorted(data.items(), key=lambda kv: (-kv[1][1], kv[0]))[:5]
    got = conn.execute("SELECT id, name, score FROM psy_users ORDER BY score DESC, id LIMIT 5").fetchall()
    equal(got, [(k, v[0], v[1]) for k, v in want], "scatter ORDER BY score DESC, id LIMIT 5")
    got = conn.execute("SELECT count(*), sum(score), min(created), max(id) FROM psy_users").fetchone()
    want = (60, sum(v[1] for v in data.values()), base + datetime.timedelta(days=1), 60)
    equal(got, want, "count/sum/min/max")
    for binary in (False, True):
        got = conn.cursor(binary=binary).execute(
            "SELECT id FROM psy_users WHERE id > %s ORDER BY id LIMIT 3", [50], prepare=True
        ).fetchall()
        equal(got, [(51,), (52,), (53,)], f"scatter with a parameter (binary={binary})")

    step("sharded: multi-row INSERT split over shards, RETURNING in VALUES order")
    got = conn.execute(
        "INSERT INTO psy_users (id, name) VALUES (%s, %s), (%s, %s), (%s, %s) RETURNING id",
        [103, "c", 101, "a", 102, "b"],
    ).fetchall()
    equal(got, [(103,), (101,), (102,)], "RETURNING order")

    step("sharded: transactions across shards commit and roll back")
    tx = connect(autocommit=False)
    for i in range(201, 206):
        tx.execute("INSERT INTO psy_users (id, name) VALUES (%s, 'tx')", [i])
    equal(scalar(tx, "SELECT count(*) FROM psy_users WHERE name = 'tx'"), 5, "own writes across shards")
    tx.rollback()
    equal(scalar(conn, "SELECT count(*) FROM psy_users WHERE name = 'tx'"), 0, "after rollback")
    for i in range(201, 206):
        tx.execute("INSERT INTO psy_users (id, name) VALUES (%s, 'tx')", [i])
    tx.commit()
    equal(scalar(conn, "SELECT count(*) FROM psy_users WHERE name = 'tx'"), 5, "after commit")
    tx.execute("INSERT INTO psy_users (id, name) VALUES (301, 'doomed')")
    expect_error(
        errors.UniqueViolation, "23505", lambda: tx.execute("INSERT INTO psy_users (id, name) VALUES (1, 'dup')"), "dup"
    )
    expect_error(errors.InFailedSqlTransaction, "25P02", lambda: tx.execute("SELECT 1"), "after error")
    tx.rollback()
    equal(scalar(tx, "SELECT count(*) FROM psy_users WHERE id = 301"), 0, "insert before the error")
    tx.commit()

    step("sharded: pipeline of point statements for several shards")
    with conn.pipeline() as p:
        c2 = conn.cursor()
        for i in range(1, 11):
            conn.execute("UPDATE psy_users SET name = %s WHERE id = %s", [f"p{i}", i])
        c2.execute("SELECT count(*) FROM psy_users WHERE name LIKE 'p%%'")
        p.sync()
        equal(c2.fetchone()[0], 10, "pipelined updates across shards")

    step("sharded: COPY into a sharded table (cursor.copy): each row on the shard of its key")
    with conn.cursor().copy("COPY psy_users (id, name) FROM STDIN") as cp:
        for i in range(900, 920):
            cp.write_row((i, "copy"))
    placed = sum(scalar(conn, "SELECT count(*) FROM psy_users WHERE id = %s AND name = 'copy'", [i]) for i in range(900, 920))
    equal(placed, 20, "copied rows found by their key")
    try:
        with conn.cursor().copy("COPY psy_users (id, name) FROM STDIN (FORMAT csv)") as cp:
            cp.write(b"950,ok\n951,\"multi\nline\"\n,null key\n")
        fail("COPY with a NULL sharding key was accepted")
    except errors.NotNullViolation as e:
        equal(e.sqlstate, "23502", "NULL sharding key in COPY")
    equal(scalar(conn, "SELECT count(*) FROM psy_users WHERE id IN (950, 951)"), 0, "rows of the failed COPY")
    equal(conn.execute("DELETE FROM psy_users WHERE name = 'copy'").rowcount, 20, "copied rows deleted")

    step("sharded: a named (server-side) cursor over a sharded table is refused with 0A000")
    # Pinned current behaviour: the router does not route DECLARE/FETCH on sharded tables (the
    # refusal is clear and leaves the connection usable after ROLLBACK). Fetch without a name.
    tx = connect(autocommit=False)
    with tx.cursor(name="psy_scatter") as sc:
        e = expect_error(errors.FeatureNotSupported, "0A000", lambda: sc.execute("SELECT id FROM psy_users"), "DECLARE")
    check("DECLARE" in str(e), f"DECLARE refusal message: {e}")
    tx.rollback()
    equal(scalar(tx, "SELECT count(*) FROM psy_users"), 68, "count after the refused DECLARE")
    tx.close()
    conn.close()


if __name__ == "__main__":
    main(lambda mode: plain() if mode == "plain" else sharded())
