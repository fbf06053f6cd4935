"""asyncpg (its own protocol implementation, extended protocol only, binary format) through
pg-router in transaction pooling mode.

Usage: asyncpg_client.py plain|sharded, connection parameters from the environment (common.py).
Exits 1 with "CHECK FAILED: ..." on the first check that does not hold.
"""

import asyncio
import datetime
import io
import json
import ssl
import time
import uuid
from decimal import Decimal

import asyncpg
from asyncpg import exceptions as exc

from common import CONN, Timer, check, equal, fail, main, step


def ssl_arg():
    if CONN.sslmode == "disable":
        return False
    # sslmode=require: encrypted, certificate not verified (as libpq's require).
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def connect(**over):
    kw = dict(
        host=CONN.host,
        port=CONN.port,
        user=CONN.user,
        password=CONN.password,
        database=CONN.dbname,
        ssl=ssl_arg(),
        timeout=10,
    )
    kw.update(over)
    return await asyncpg.connect(**kw)


async def expect_error(cls, sqlstate, coro, what):
    try:
        await coro
    except cls as e:
        equal(e.sqlstate, sqlstate, f"{what}: SQLSTATE")
        return e
    fail(f"{what}: no {cls.__name__} raised")


def encrypted(conn):
    return conn._transport.get_extra_info("ssl_object") is not None


async def check_login():
    step("SCRAM login; wrong password is 28P01; md5 user")
    c = await connect()
    equal(await c.fetchval("SELECT 1"), 1, "SELECT 1")
    equal(encrypted(c), CONN.sslmode != "disable", f"TLS in use with sslmode={CONN.sslmode}")
    await c.close()
    await expect_error(exc.InvalidPasswordError, "28P01", connect(password="wrong"), "wrong password")
    c = await connect(user=CONN.md5_user, password=CONN.md5_password)
    equal(await c.fetchval("SELECT 1"), 1, "md5 login")
    await c.close()
    if CONN.sslrootcert:
        step("TLS with certificate and host name verification (host localhost)")
        ctx = ssl.create_default_context(cafile=CONN.sslrootcert)
        c = await connect(host="localhost", ssl=ctx)
        check(encrypted(c), "verified connection not encrypted")
        equal(await c.fetchval("SELECT 3"), 3, "query over a verified connection")
        await c.close()


UTC = datetime.timezone.utc
TYPES = [
    ("int2", -32768),
    ("int4", 2147483647),
    ("int8", -(1 << 62)),
    ("numeric", Decimal("12345678901234567890.123456789")),
    ("float8", 0.1 + 0.2),
    ("text", "h\u00e9llo\tworld \U0001f600 'quoted'"),
    ("bytea", bytes(range(256))),
    ("bool", True),
    ("timestamptz", datetime.datetime(2024, 2, 29, 12, 34, 56, 789123, tzinfo=UTC)),
    ("date", datetime.date(1999, 12, 31)),
    ("uuid", uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")),
    ("jsonb", {"k": [1, 2, {"x": None}], "s": "\u00fc"}),
    ("int4[]", [1, None, 3]),
    ("text[]", ["a", "b c", None, 'q"uote']),
    ("text", None),
]


async def check_types(conn):
    step("types: binary parameters and results (jsonb through a type codec)")
    # The codec makes asyncpg introspect the type through the router.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    casts = ", ".join(f"${i + 1}::{t}" for i, (t, _) in enumerate(TYPES))
    row = await conn.fetchrow(f"SELECT {casts}", *[v for _, v in TYPES])
    for (t, v), got in zip(TYPES, row):
        equal(got, v, f"{t} round trip")
    step("types: through a table")
    cols = ", ".join(f"c{i} {t}" for i, (t, _) in enumerate(TYPES))
    await conn.execute(f"DROP TABLE IF EXISTS asy_types; CREATE TABLE asy_types (id int PRIMARY KEY, {cols})")
    marks = ", ".join(f"${i + 1}" for i in range(len(TYPES) + 1))
    await conn.execute(f"INSERT INTO asy_types VALUES ({marks})", 1, *[v for _, v in TYPES])
    row = await conn.fetchrow("SELECT * FROM asy_types WHERE id = 1")
    for (t, v), got in zip(TYPES, list(row)[1:]):
        equal(got, v, f"{t} stored and read back")
    step("simple query protocol: a script of several statements")
    status = await conn.execute("SELECT 1; UPDATE asy_types SET c5 = 'x' WHERE id = 1; SELECT 2")
    equal(status, "SELECT 1", "status of the last statement")
    equal(await conn.fetchval("SELECT c5 FROM asy_types WHERE id = 1"), "x", "update in the script")


async def distinct_backends(run_once, rounds=40):
    """Runs `run_once(i)` -> backend pid while two other connections alternately take and
    release a backend (an open transaction), so the statement lands on several backends."""
    holders = [await connect() for _ in range(2)]
    held = [None, None]
    pids = set()
    for i in range(rounds):
        pids.add(await run_once(i))
        k = i % 2
        if held[k] is None:
            held[k] = holders[k].transaction()
            await held[k].start()
            await holders[k].fetchval("SELECT pg_backend_pid()")
        else:
            await held[k].rollback()
            held[k] = None
    for h in holders:
        await h.close()
    return pids


async def check_prepared(conn):
    step("statement cache: the same query re-used across transactions and backends")

    async def cached(i):
        row = await conn.fetchrow("SELECT $1::int4 * 2 AS v, pg_backend_pid() AS pid", i)
        equal(row["v"], i * 2, "cached statement result")
        return row["pid"]

    pids = await distinct_backends(cached)
    check(len(pids) >= 2, f"cached statement ran on one backend only ({pids})")

    step("explicit prepared statement (conn.prepare) re-used across backends")
    stmt = await conn.prepare("SELECT $1::text || '!' AS v, pg_backend_pid() AS pid")

    async def prepared(i):
        row = await stmt.fetchrow(f"x{i}")
        equal(row["v"], f"x{i}!", "prepared statement result")
        return row["pid"]

    pids = await distinct_backends(prepared)
    check(len(pids) >= 2, f"prepared statement ran on one backend only ({pids})")
    equal([a.name for a in stmt.get_attributes()], ["v", "pid"], "statement attributes")
    equal([t.name for t in stmt.get_parameters()], ["text"], "statement parameter types")

    step("statement cache of size 2 with 5 statements: evictions close statements")
    c = await connect(statement_cache_size=2)
    for round_ in range(4):
        for k in range(5):
            equal(await c.fetchval(f"SELECT $1::int + {k}", round_), round_ + k, "evicted statement")
    await c.close()


async def check_transactions(conn):
    step("transactions: commit, rollback, savepoint")
    await conn.execute("DROP TABLE IF EXISTS asy_t; CREATE TABLE asy_t (id int PRIMARY KEY, v text)")
    async with conn.transaction():
        await conn.execute("INSERT INTO asy_t VALUES ($1, $2)", 1, "committed")
    try:
        async with conn.transaction():
            await conn.execute("INSERT INTO asy_t VALUES ($1, $2)", 2, "rolled back")
            equal(await conn.fetchval("SELECT count(*) FROM asy_t"), 2, "own insert")
            raise KeyError("roll back")
    except KeyError:
        pass
    other = await connect()
    equal(await other.fetchval("SELECT count(*) FROM asy_t WHERE id = 2"), 0, "rolled-back insert")
    equal(await other.fetchval("SELECT v FROM asy_t WHERE id = 1"), "committed", "committed insert")
    async with conn.transaction():
        await conn.execute("INSERT INTO asy_t VALUES (3, 'outer')")
        try:
            async with conn.transaction():  # a savepoint
                await conn.execute("INSERT INTO asy_t VALUES (4, 'inner')")
                raise KeyError("roll back the savepoint")
        except KeyError:
            pass
    equal([r["id"] for r in await other.fetch("SELECT id FROM asy_t ORDER BY id")], [1, 3], "after savepoint")

    step("error inside a transaction: 22012, then 25P02, ROLLBACK, connection usable")
    tr = conn.transaction()
    await tr.start()
    await conn.execute("INSERT INTO asy_t VALUES (5, 'doomed')")
    await expect_error(exc.DivisionByZeroError, "22012", conn.fetchval("SELECT 1/0"), "1/0")
    await expect_error(exc.InFailedSQLTransactionError, "25P02", conn.fetchval("SELECT 1"), "after error")
    await tr.rollback()
    equal(await conn.fetchval("SELECT count(*) FROM asy_t WHERE id = 5"), 0, "insert before the error")
    await other.close()


async def check_batches(conn):
    step("executemany (one pipelined batch); an error in the batch undoes all of it")
    await conn.execute("DROP TABLE IF EXISTS asy_batch; CREATE TABLE asy_batch (id int PRIMARY KEY, v text)")
    await conn.executemany("INSERT INTO asy_batch VALUES ($1, $2)", [(i, f"v{i}") for i in range(200)])
    equal(await conn.fetchval("SELECT count(*) FROM asy_batch"), 200, "rows after executemany")
    await expect_error(
        exc.UniqueViolationError,
        "23505",
        conn.executemany("INSERT INTO asy_batch VALUES ($1, $2)", [(1000, "a"), (1, "dup"), (1001, "b")]),
        "executemany with a duplicate",
    )
    equal(await conn.fetchval("SELECT count(*) FROM asy_batch"), 200, "rows after the failed executemany")

    step("several queries in flight on a pool of connections")
    pool = await asyncpg.create_pool(
        host=CONN.host, port=CONN.port, user=CONN.user, password=CONN.password,
        database=CONN.dbname, ssl=ssl_arg(), min_size=2, max_size=4,
    )
    try:
        async def one(i):
            async with pool.acquire() as c:
                return await c.fetchval("SELECT $1::int * 3 FROM pg_sleep(0.01)", i)

        got = await asyncio.gather(*[one(i) for i in range(40)])
        equal(got, [i * 3 for i in range(40)], "results of concurrent queries")
    finally:
        await pool.close()


async def check_copy(conn):
    step("COPY: copy_records_to_table (binary), copy_to_table (csv), copy_from_query, failing COPY")
    await conn.execute(
        "DROP TABLE IF EXISTS asy_copy; "
        "CREATE TABLE asy_copy (id int PRIMARY KEY, name text, data bytea, ts timestamptz)"
    )
    base = datetime.datetime(2024, 1, 1, tzinfo=UTC)
    rows = [(i, f"name-{i}-\u00e9,\"q\"", bytes([i % 256, 0, 255]), base + datetime.timedelta(seconds=i)) for i in range(5000)]
    status = await conn.copy_records_to_table("asy_copy", records=rows[:4000], columns=["id", "name", "data", "ts"])
    equal(status, "COPY 4000", "copy_records_to_table status")
    csv = "".join(f"{i},name-{i}\n" for i in range(4000, 5000)).encode()
    status = await conn.copy_to_table("asy_copy", source=io.BytesIO(csv), columns=["id", "name"], format="csv")
    equal(status, "COPY 1000", "copy_to_table status")
    out = io.BytesIO()
    status = await conn.copy_from_query("SELECT id, name FROM asy_copy WHERE id < 3 ORDER BY id", output=out, format="csv")
    equal(status, "COPY 3", "copy_from_query status")
    want = "".join(f'{i},"name-{i}-\u00e9,""q"""\n' for i in range(3))
    equal(out.getvalue().decode(), want, "copy_from_query output")
    got = await conn.fetch("SELECT id, name, data, ts FROM asy_copy WHERE id < 4000 ORDER BY id")
    check([tuple(r) for r in got] == rows[:4000], "rows read back differ from the records copied in")
    chunks = []

    async def sink(chunk):
        chunks.append(chunk)

    status = await conn.copy_from_table("asy_copy", output=sink, columns=["id"])
    equal(status, "COPY 5000", "copy_from_table status")
    equal(sorted(int(x) for x in b"".join(chunks).split()), list(range(5000)), "copy_from_table ids")
    await expect_error(
        exc.UniqueViolationError,
        "23505",
        conn.copy_records_to_table("asy_copy", records=[(7, "dup")], columns=["id", "name"]),
        "COPY of a duplicate",
    )
    equal(await conn.fetchval("SELECT count(*) FROM asy_copy"), 5000, "rows after the failed COPY")


async def check_cancel(conn):
    step("timeout= on pg_sleep(30): asyncpg sends a CancelRequest; connection usable")
    with Timer() as t:
        try:
            await conn.fetch("SELECT pg_sleep(30)", timeout=0.5)
            fail("pg_sleep(30) with timeout=0.5 returned")
        except asyncio.TimeoutError:
            pass
        equal(await conn.fetchval("SELECT 42"), 42, "connection usable after the cancel")
    check(t.elapsed < 10, f"timeout + cancel took {t.elapsed:.1f}s")

    step("a cancelled asyncio task cancels its query")
    c = await connect()
    task = asyncio.ensure_future(c.fetch("SELECT pg_sleep(30)"))
    await asyncio.sleep(0.5)
    with Timer() as t:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        equal(await c.fetchval("SELECT 43"), 43, "connection usable after the task was cancelled")
    check(t.elapsed < 10, f"task cancel took {t.elapsed:.1f}s")
    await c.close()

    step("statement_timeout from server_settings (a startup parameter) -> 57014")
    c = await connect(server_settings={"statement_timeout": "300", "application_name": "asy"})
    for _ in range(2):  # on whichever backend serves each transaction
        equal(await c.fetchval("SHOW application_name"), "asy", "application_name")
        await expect_error(exc.QueryCanceledError, "57014", c.fetch("SELECT pg_sleep(5)"), "statement_timeout")
    await c.close()


async def check_session_features(conn):
    step("what transaction pooling refuses fails fast with 0A000 and a clear message")
    with Timer() as t:
        e = await expect_error(
            exc.FeatureNotSupportedError, "0A000", conn.add_listener("asy_chan", lambda *a: None), "add_listener"
        )
    check("session pooling" in str(e), f"LISTEN refusal message: {e}")
    check(t.elapsed < 5, f"LISTEN refusal took {t.elapsed:.1f}s")
    await expect_error(
        exc.FeatureNotSupportedError, "0A000", conn.fetchval("SELECT pg_advisory_lock(1)"), "pg_advisory_lock"
    )
    equal(await conn.fetchval("SELECT 1"), 1, "connection usable after the refusals")

    step("cursor (Execute with a row limit) inside a transaction")
    async with conn.transaction():
        total = 0
        async for r in conn.cursor("SELECT g FROM generate_series(1, 1000) g", prefetch=100):
            total += r["g"]
        equal(total, 500500, "sum over the cursor")
        cur = await conn.cursor("SELECT g FROM generate_series(1, 10) g")
        equal([r["g"] for r in await cur.fetch(3)], [1, 2, 3], "cursor.fetch(3)")
        equal((await cur.fetchrow())["g"], 4, "cursor.fetchrow()")


async def check_pool_reset():
    step("asyncpg Pool: a connection released to the pool is reset (reset query) and re-used")
    pool = await asyncpg.create_pool(
        host=CONN.host, port=CONN.port, user=CONN.user, password=CONN.password,
        database=CONN.dbname, ssl=ssl_arg(), min_size=1, max_size=1,
    )
    try:
        for i in range(3):
            async with pool.acquire() as c:
                equal(await c.fetchval("SELECT $1::int", i), i, "query on a pooled connection")
    finally:
        await pool.close()


async def plain():
    await check_login()
    conn = await connect()
    await check_types(conn)
    await check_prepared(conn)
    await check_transactions(conn)
    await check_batches(conn)
    await check_copy(conn)
    await check_cancel(conn)
    await check_session_features(conn)
    await check_pool_reset()
    await conn.close()


async def first(conn, sql, *args):
    """The first column of the first row, read with fetch() (no row limit)."""
    return (await conn.fetch(sql, *args))[0][0]


async def sharded():
    await check_login()
    conn = await connect()
    step("sharded: DDL through the router, inserts with parameters across shards")
    await conn.execute("DROP TABLE IF EXISTS asy_users")
    await conn.execute(
        "CREATE TABLE asy_users (id bigint PRIMARY KEY, name text NOT NULL, score numeric(10,2), "
        "created timestamptz)"
    )
    base = datetime.datetime(2024, 1, 1, tzinfo=UTC)
    data = {i: (f"user{i}", Decimal(i * 7 % 50) + Decimal("0.25"), base + datetime.timedelta(days=i)) for i in range(1, 61)}
    insert = "INSERT INTO asy_users (id, name, score, created) VALUES ($1, $2, $3, $4)"
    for i in range(1, 31):
        equal(await conn.execute(insert, i, *data[i]), "INSERT 0 1", f"insert {i}")
    # An executemany batch across shards outside a transaction (each shard commits its part).
    await conn.executemany(insert, [(i, *data[i]) for i in range(31, 61)])
    equal(await first(conn, "SELECT count(*) FROM asy_users"), 60, "count(*) over all shards")

    step("sharded: point selects by key with a cached and an explicit prepared statement")
    for i in range(1, 61):
        row = await conn.fetchrow("SELECT name, score, created FROM asy_users WHERE id = $1", i)
        equal(tuple(row), data[i], f"point select id={i}")
    stmt = await conn.prepare("SELECT name FROM asy_users WHERE id = $1")
    for i in range(60, 0, -1):
        equal(await stmt.fetchval(i), data[i][0], f"prepared point select id={i}")

    step("sharded: scatter ORDER BY ... LIMIT, aggregates")
    want = sorted(data.items(), key=lambda kv: (-kv[1][1], kv[0]))[:5]
    got = await conn.fetch("SELECT id, name, score FROM asy_users ORDER BY score DESC, id LIMIT 5")
    equal([tuple(r) for r in got], [(k, v[0], v[1]) for k, v in want], "ORDER BY score DESC, id LIMIT 5")
    got = (await conn.fetch("SELECT count(*), sum(score), min(created), max(id) FROM asy_users"))[0]
    want = (60, sum(v[1] for v in data.values()), base + datetime.timedelta(days=1), 60)
    equal(tuple(got), want, "count/sum/min/max")
    got = await conn.fetch("SELECT id FROM asy_users WHERE id > $1 ORDER BY id LIMIT 3", 50)
    equal([r["id"] for r in got], [51, 52, 53], "scatter with a parameter")

    step("sharded: transactions across shards commit and roll back")
    try:
        async with conn.transaction():
            for i in range(201, 206):
                await conn.execute("INSERT INTO asy_users (id, name) VALUES ($1, 'tx')", i)
            equal(await first(conn, "SELECT count(*) FROM asy_users WHERE name = 'tx'"), 5, "own writes")
            raise KeyError("roll back")
    except KeyError:
        pass
    equal(await first(conn, "SELECT count(*) FROM asy_users WHERE name = 'tx'"), 0, "after rollback")
    async with conn.transaction():
        await conn.executemany("INSERT INTO asy_users (id, name) VALUES ($1, 'tx')", [(i,) for i in range(201, 206)])
    equal(await first(conn, "SELECT count(*) FROM asy_users WHERE name = 'tx'"), 5, "after commit")
    tr = conn.transaction()
    await tr.start()
    await conn.execute("INSERT INTO asy_users (id, name) VALUES (301, 'doomed')")
    await expect_error(
        exc.UniqueViolationError, "23505", conn.execute("INSERT INTO asy_users (id, name) VALUES (1, 'dup')"), "dup"
    )
    await expect_error(exc.InFailedSQLTransactionError, "25P02", conn.fetchval("SELECT 1"), "after error")
    await tr.rollback()
    equal(await conn.fetchval("SELECT count(*) FROM asy_users WHERE id = 301"), 0, "insert before the error")

    step("sharded: COPY into a sharded table (binary copy_records_to_table): each row on its key's shard")
    result = await conn.copy_records_to_table(
        "asy_users", records=[(i, "copy") for i in range(900, 920)], columns=["id", "name"]
    )
    equal(result, "COPY 20", "COPY tag")
    placed = 0
    for i in range(900, 920):
        placed += await first(conn, "SELECT count(*) FROM asy_users WHERE id = $1 AND name = 'copy'", i)
    equal(placed, 20, "copied rows found by their key")
    await expect_error(
        exc.UniqueViolationError,
        "23505",
        conn.copy_records_to_table("asy_users", records=[(950, "ok"), (1, "dup")], columns=["id", "name"]),
        "COPY of a duplicate key",
    )
    equal(await first(conn, "SELECT count(*) FROM asy_users WHERE id = 950"), 0, "rows of the failed COPY")
    equal(await conn.execute("DELETE FROM asy_users WHERE name = 'copy'"), "DELETE 20", "copied rows deleted")
    equal(await first(conn, "SELECT count(*) FROM asy_users"), 65, "count after COPY and DELETE")

    step("sharded: cursor (Execute with a row limit) in a transaction")
    async with conn.transaction():
        # One shard: the portal is the shard's own, so row limits work.
        ids = [r["id"] async for r in conn.cursor("SELECT id FROM asy_users WHERE id = $1", 7, prefetch=1)]
        equal(ids, [7], "cursor over a single-shard query")
    # Across shards the router runs the merge once and hands the result out in chunks.
    all_ids = [r["id"] for r in await conn.fetch("SELECT id FROM asy_users ORDER BY id")]
    for prefetch in (1, 10, 1000):
        async with conn.transaction():
            ids = [r["id"] async for r in conn.cursor("SELECT id FROM asy_users ORDER BY id", prefetch=prefetch)]
        equal(ids, all_ids, f"cursor over a scatter query, prefetch={prefetch}")
    async with conn.transaction():
        cur = await conn.cursor("SELECT id FROM asy_users ORDER BY id DESC")
        equal([r["id"] for r in await cur.fetch(5)], all_ids[::-1][:5], "cursor.fetch(5)")
        equal((await cur.fetchrow())["id"], all_ids[::-1][5], "cursor.fetchrow()")
    equal(await first(conn, "SELECT count(*) FROM asy_users"), 65, "usable after the cursors")

    step("sharded: fetchval/fetchrow of a cross-shard query (Execute with a row limit of 1)")
    equal(await conn.fetchval("SELECT count(*) FROM asy_users"), 65, "fetchval(count(*)) across shards")
    row = await conn.fetchrow("SELECT min(id) AS lo, max(id) AS hi FROM asy_users")
    equal((row["lo"], row["hi"]), (all_ids[0], all_ids[-1]), "fetchrow(min, max) across shards")
    equal(await conn.fetchval("SELECT id FROM asy_users ORDER BY id DESC"), all_ids[-1], "fetchval of a sorted scatter")
    equal(await conn.fetchval("SELECT name FROM asy_users WHERE id = $1", 9), "user9", "fetchval on one shard")

    step("sharded: asyncpg Pool (its reset query runs on release)")
    pool = await asyncpg.create_pool(
        host=CONN.host, port=CONN.port, user=CONN.user, password=CONN.password,
        database=CONN.dbname, ssl=ssl_arg(), min_size=1, max_size=2,
    )
    try:
        for i in range(1, 6):
            async with pool.acquire() as c:
                equal(await c.fetchval("SELECT name FROM asy_users WHERE id = $1", i), f"user{i}", "pooled")
    finally:
        await pool.close()
    await conn.close()


if __name__ == "__main__":
    main(lambda mode: asyncio.run(plain() if mode == "plain" else sharded()))
