// node-postgres (pg) through pg-router in transaction pooling mode.
//
// Usage: node client.js plain|sharded. Connection parameters from libpq's environment names:
// PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGSSLMODE (disable|require), PGSSLROOTCERT
// (CA file: also connect verifying the certificate for host name "localhost"), PGMD5USER and
// PGMD5PASSWORD (a user that logs in with md5). Exits 1 with "CHECK FAILED: ..." on the first
// check that does not hold.
'use strict'

const assert = require('node:assert/strict')
const fs = require('node:fs')
const pg = require('pg')
const copyStreams = require('pg-copy-streams')
const { pipeline } = require('node:stream/promises')
const { Readable } = require('node:stream')

function env(name, fallback) {
  const v = process.env[name] ?? fallback
  if (v === undefined) throw new CheckFailed(`environment variable ${name} is not set`)
  return v
}

class CheckFailed extends Error {}

function fail(msg) {
  throw new CheckFailed(msg)
}

function check(cond, msg) {
  if (!cond) fail(msg)
}

function equal(got, want, what) {
  try {
    assert.deepStrictEqual(got, want)
  } catch (_) {
    fail(`${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`)
  }
}

function step(name) {
  console.log(`-- ${name}`)
}

const sslmode = env('PGSSLMODE', 'disable')

function config(over = {}) {
  return {
    host: env('PGHOST'),
    port: Number(env('PGPORT')),
    user: env('PGUSER'),
    password: env('PGPASSWORD'),
    database: env('PGDATABASE'),
    // sslmode=require: encrypted, certificate not verified (as libpq's require).
    ssl: sslmode === 'disable' ? false : { rejectUnauthorized: false },
    connectionTimeoutMillis: 10000,
    ...over,
  }
}

async function connect(over) {
  const c = new pg.Client(config(over))
  await c.connect()
  return c
}

async function scalar(c, text, values) {
  const r = await c.query({ text, values, rowMode: 'array' })
  return r.rows[0][0]
}

async function expectError(code, promise, what) {
  try {
    await promise
  } catch (e) {
    if (e instanceof CheckFailed) throw e
    equal(e.code, code, `${what}: SQLSTATE (${e.message})`)
    return e
  }
  fail(`${what}: no error`)
}

async function elapsed(fn) {
  const start = Date.now()
  const value = await fn()
  return [value, (Date.now() - start) / 1000]
}

function encrypted(c) {
  return typeof c.connection.stream.getPeerCertificate === 'function'
}

async function checkLogin() {
  step('SCRAM login; wrong password is 28P01; md5 user')
  let c = await connect()
  equal(await scalar(c, 'SELECT 1'), 1, 'SELECT 1')
  equal(encrypted(c), sslmode !== 'disable', `TLS in use with sslmode=${sslmode}`)
  await c.end()
  const bad = new pg.Client(config({ password: 'wrong' }))
  await expectError('28P01', bad.connect(), 'wrong password')
  c = await connect({ user: env('PGMD5USER'), password: env('PGMD5PASSWORD') })
  equal(await scalar(c, 'SELECT 1'), 1, 'md5 login')
  await c.end()
  const ca = process.env.PGSSLROOTCERT
  if (ca) {
    step('TLS verifying the certificate against the CA file for host name localhost')
    c = await connect({ ssl: { ca: fs.readFileSync(ca), servername: 'localhost' } })
    check(encrypted(c), 'verified connection not encrypted')
    equal(await scalar(c, 'SELECT 3'), 3, 'query over a verified connection')
    await c.end()
  }
}

const TYPES = [
  // [cast, parameter, value read back (node-postgres's default parsers)]
  ['int2', -32768, -32768],
  ['int4', 2147483647, 2147483647],
  ['int8', '-4611686018427387904', '-4611686018427387904'],
  ['numeric', '12345678901234567890.123456789', '12345678901234567890.123456789'],
  ['float8', 0.1 + 0.2, 0.1 + 0.2],
  ['text', "h\u00e9llo\tworld \u{1f600} 'quoted'", "h\u00e9llo\tworld \u{1f600} 'quoted'"],
  ['bytea', Buffer.from([0, 1, 2, 127, 128, 255]), Buffer.from([0, 1, 2, 127, 128, 255])],
  ['bool', true, true],
  ['timestamptz', new Date('2024-02-29T12:34:56.789Z'), new Date('2024-02-29T12:34:56.789Z')],
  ['date::text', '1999-12-31', '1999-12-31'],
  ['uuid', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'],
  ['jsonb', { k: [1, 2, { x: null }], s: '\u00fc' }, { k: [1, 2, { x: null }], s: '\u00fc' }],
  ['int4[]', [1, null, 3], [1, null, 3]],
  ['text[]', ['a', 'b c', null, 'q"uote'], ['a', 'b c', null, 'q"uote']],
  ['text', null, null],
]

async function checkTypes(c) {
  step('types: parameters and results')
  const casts = TYPES.map(([t], i) => `$${i + 1}::${t}`).join(', ')
  const params = TYPES.map(([, p]) => (p !== null && typeof p === 'object' && !Array.isArray(p) && !(p instanceof Date) && !Buffer.isBuffer(p) ? JSON.stringify(p) : p))
  const row = (await c.query({ text: `SELECT ${casts}`, values: params, rowMode: 'array' })).rows[0]
  TYPES.forEach(([t, , want], i) => equal(row[i], want, `${t} round trip`))

  step('types: through a table')
  const cols = TYPES.map(([t], i) => `c${i} ${t.replace('::text', '')}`).join(', ')
  await c.query('DROP TABLE IF EXISTS node_types')
  await c.query(`CREATE TABLE node_types (id int PRIMARY KEY, ${cols})`)
  const marks = TYPES.map((_, i) => `$${i + 2}`).join(', ')
  await c.query(`INSERT INTO node_types VALUES ($1, ${marks})`, [1, ...params])
  const sel = TYPES.map(([t], i) => (t === 'date::text' ? `c${i}::text` : `c${i}`)).join(', ')
  const back = (await c.query({ text: `SELECT ${sel} FROM node_types WHERE id = 1`, rowMode: 'array' })).rows[0]
  TYPES.forEach(([t, , want], i) => equal(back[i], want, `${t} stored and read back`))

  step('simple query protocol: several statements in one Query')
  const results = await c.query("SELECT 1 AS a; SELECT 'x' AS b, NULL AS c")
  equal(results.length, 2, 'results of a multi-statement Query')
  equal(results[1].rows, [{ b: 'x', c: null }], 'second result')
}

// Runs once(i) -> backend pid while two other clients alternately hold and release a backend
// (an open transaction), so the statement lands on several backends.
async function distinctBackends(once, rounds = 40) {
  const holders = [await connect(), await connect()]
  const held = [false, false]
  const pids = new Set()
  for (let i = 0; i < rounds; i++) {
    pids.add(await once(i))
    const k = i % 2
    if (held[k]) {
      await holders[k].query('ROLLBACK')
    } else {
      await holders[k].query('BEGIN')
      await holders[k].query('SELECT pg_backend_pid()')
    }
    held[k] = !held[k]
  }
  for (const h of holders) await h.end()
  return pids
}

async function checkPrepared(c) {
  step('named prepared statements ({name, text, values}) across transactions and backends')
  const pids = await distinctBackends(async (i) => {
    const r = await c.query({ name: 'node_double', text: 'SELECT $1::int4 * 2 AS v, pg_backend_pid() AS pid', values: [i] })
    equal(r.rows[0].v, i * 2, 'named statement result')
    return r.rows[0].pid
  })
  check(pids.size >= 2, `named statement ran on one backend only (${[...pids]})`)
  step('many named statements, each used several times, some inside transactions')
  for (let round = 0; round < 3; round++) {
    if (round === 1) await c.query('BEGIN')
    for (let k = 0; k < 10; k++) {
      const v = await scalar(c, `SELECT $1::int + ${k}`, [round])
      equal(v, round + k, 'unnamed statement')
      const r = await c.query({ name: `node_s${k}`, text: `SELECT $1::int + ${k} AS v`, values: [round] })
      equal(r.rows[0].v, round + k, 'named statement')
    }
    if (round === 1) await c.query('COMMIT')
  }
}

async function checkTransactions(c) {
  step('transactions: commit, rollback, savepoint')
  await c.query('DROP TABLE IF EXISTS node_t')
  await c.query('CREATE TABLE node_t (id int PRIMARY KEY, v text)')
  const other = await connect()
  await c.query('BEGIN')
  await c.query('INSERT INTO node_t VALUES ($1, $2)', [1, 'committed'])
  await c.query('COMMIT')
  await c.query('BEGIN')
  await c.query('INSERT INTO node_t VALUES ($1, $2)', [2, 'rolled back'])
  equal(await scalar(c, 'SELECT count(*)::int FROM node_t'), 2, 'own insert')
  await c.query('ROLLBACK')
  equal(await scalar(other, 'SELECT count(*)::int FROM node_t WHERE id = 2'), 0, 'rolled-back insert')
  equal(await scalar(other, 'SELECT v FROM node_t WHERE id = 1'), 'committed', 'committed insert')
  await c.query('BEGIN')
  await c.query("INSERT INTO node_t VALUES (3, 'outer')")
  await c.query('SAVEPOINT s1')
  await c.query("INSERT INTO node_t VALUES (4, 'inner')")
  await c.query('ROLLBACK TO SAVEPOINT s1')
  await c.query('COMMIT')
  equal((await other.query('SELECT id FROM node_t ORDER BY id')).rows, [{ id: 1 }, { id: 3 }], 'after savepoint')

  step('error inside a transaction: 22012, then 25P02, ROLLBACK, connection usable')
  await c.query('BEGIN')
  await c.query("INSERT INTO node_t VALUES (5, 'doomed')")
  await expectError('22012', c.query('SELECT 1/0'), '1/0')
  await expectError('25P02', c.query('SELECT 1'), 'after error')
  await c.query('ROLLBACK')
  equal(await scalar(c, 'SELECT count(*)::int FROM node_t WHERE id = 5'), 0, 'insert before the error')
  await other.end()
}

async function checkInFlight(c) {
  step('several queries in flight: queued on one client, and on a pool')
  await c.query('DROP TABLE IF EXISTS node_batch')
  await c.query('CREATE TABLE node_batch (id int PRIMARY KEY, v text)')
  const inserts = []
  for (let i = 0; i < 100; i++) {
    inserts.push(c.query({ name: 'node_ins', text: 'INSERT INTO node_batch VALUES ($1, $2)', values: [i, `v${i}`] }))
  }
  await Promise.all(inserts)
  equal(await scalar(c, 'SELECT count(*)::int FROM node_batch'), 100, 'rows after queued inserts')
  // An error among queued queries fails only that query.
  const [a, b, d] = await Promise.allSettled([
    c.query('INSERT INTO node_batch VALUES (1000, $1)', ['a']),
    c.query('INSERT INTO node_batch VALUES (1, $1)', ['dup']),
    c.query('INSERT INTO node_batch VALUES (1001, $1)', ['b']),
  ])
  equal([a.status, b.status, d.status], ['fulfilled', 'rejected', 'fulfilled'], 'queued queries with an error')
  equal(b.reason.code, '23505', 'duplicate key')
  const pool = new pg.Pool({ ...config(), max: 4 })
  try {
    const got = await Promise.all(
      Array.from({ length: 40 }, (_, i) => pool.query({ text: 'SELECT $1::int * 3 AS v FROM pg_sleep(0.01)', values: [i] })),
    )
    equal(got.map((r) => r.rows[0].v), Array.from({ length: 40 }, (_, i) => i * 3), 'pool results')
    // A checked-out client with a transaction, then released back to the pool.
    const pc = await pool.connect()
    await pc.query('BEGIN')
    await pc.query("INSERT INTO node_batch VALUES (2000, 'pool')")
    await pc.query('COMMIT')
    pc.release()
    equal((await pool.query('SELECT v FROM node_batch WHERE id = 2000')).rows, [{ v: 'pool' }], 'pooled transaction')
  } finally {
    await pool.end()
  }
}

async function checkCancel() {
  step('query cancel (Client#cancel sends a CancelRequest) on pg_sleep(30)')
  const c = await connect()
  const q = new pg.Query('SELECT pg_sleep(30)')
  const running = new Promise((resolve, reject) => {
    q.on('end', resolve)
    q.on('error', reject)
  })
  c.query(q)
  await new Promise((r) => setTimeout(r, 500))
  const [, took] = await elapsed(async () => {
    new pg.Client(config()).cancel(c, q)
    await expectError('57014', running, 'cancelled query')
  })
  check(took < 10, `cancel took ${took}s`)
  equal(await scalar(c, 'SELECT 42'), 42, 'connection usable after the cancel')
  await c.end()

  step('statement_timeout as a startup parameter (replayed on each backend) -> 57014')
  const t = await connect({ statement_timeout: 300, application_name: 'node' })
  for (let i = 0; i < 2; i++) {
    equal(await scalar(t, 'SHOW application_name'), 'node', 'application_name')
    await expectError('57014', t.query('SELECT pg_sleep(5)'), 'statement_timeout')
  }
  await t.end()
}

async function checkSessionFeatures(c) {
  step('what transaction pooling refuses fails fast with 0A000 and a clear message')
  for (const [sql, hint] of [
    ['LISTEN node_chan', 'session pooling'],
    ['SELECT pg_advisory_lock(1)', 'pg_advisory_xact_lock'],
  ]) {
    const [e, took] = await elapsed(() => expectError('0A000', c.query(sql), sql))
    check(e.message.includes(hint), `${sql}: message ${JSON.stringify(e.message)} does not mention ${hint}`)
    check(took < 5, `${sql}: refusal took ${took}s`)
  }
  equal(await scalar(c, 'SELECT 1'), 1, 'connection usable after the refusals')
  // node-postgres emits 'notification' only for LISTEN, which is refused; UNLISTEN is harmless.
  await c.query('UNLISTEN *')
}

async function checkCopy(c) {
  step('COPY FROM STDIN and COPY TO STDOUT with pg-copy-streams; a failing COPY')
  await c.query('DROP TABLE IF EXISTS node_copy')
  await c.query('CREATE TABLE node_copy (id int PRIMARY KEY, name text, note text)')
  const lines = []
  for (let i = 0; i < 20000; i++) lines.push(`${i}\tname ${i}\t${i % 7 === 0 ? '\\N' : `n\u00e9\\t${i}`}\n`)
  const sent = lines.join('')
  // Chunks that split lines and multi-byte characters.
  const bytes = Buffer.from(sent)
  const chunks = []
  for (let i = 0; i < bytes.length; i += 777) chunks.push(bytes.subarray(i, i + 777))
  const into = c.query(copyStreams.from('COPY node_copy FROM STDIN'))
  await pipeline(Readable.from(chunks), into)
  equal(into.rowCount, 20000, 'COPY FROM row count')
  const out = []
  const from = c.query(copyStreams.to('COPY (SELECT * FROM node_copy ORDER BY id) TO STDOUT'))
  await pipeline(from, async function* (source) {
    for await (const chunk of source) out.push(chunk)
  })
  equal(Buffer.concat(out).toString(), sent, 'COPY TO STDOUT returns the rows byte for byte')
  const bad = c.query(copyStreams.from('COPY node_copy FROM STDIN'))
  await expectError('22P02', pipeline(Readable.from([Buffer.from('20001\tok\tx\nnot-a-number\tx\tx\n')]), bad), 'bad COPY data')
  equal(await scalar(c, 'SELECT count(*)::int FROM node_copy'), 20000, 'a failed COPY adds nothing')
  await c.query('BEGIN')
  await pipeline(Readable.from([Buffer.from('30000\tin tx\t\\N\n')]), c.query(copyStreams.from('COPY node_copy FROM STDIN')))
  await c.query('ROLLBACK')
  equal(await scalar(c, 'SELECT count(*)::int FROM node_copy WHERE id = 30000'), 0, 'COPY rolled back with its transaction')
}

async function plain() {
  await checkLogin()
  const c = await connect()
  await checkTypes(c)
  await checkPrepared(c)
  await checkTransactions(c)
  await checkInFlight(c)
  await checkCancel()
  await checkSessionFeatures(c)
  await checkCopy(c)
  await c.end()
}

async function sharded() {
  await checkLogin()
  const c = await connect()
  step('sharded: DDL through the router, inserts with parameters across shards')
  await c.query('DROP TABLE IF EXISTS node_users')
  await c.query('CREATE TABLE node_users (id bigint PRIMARY KEY, name text NOT NULL, score numeric(10,2), created timestamptz)')
  const data = new Map()
  for (let i = 1; i <= 60; i++) {
    data.set(i, { name: `user${i}`, score: `${(i * 7) % 50}.25`, created: new Date(Date.UTC(2024, 0, 1 + i)) })
  }
  const inserts = []
  for (const [id, d] of data) {
    inserts.push(
      c.query({
        name: 'node_users_ins',
        text: 'INSERT INTO node_users (id, name, score, created) VALUES ($1, $2, $3, $4)',
        values: [id, d.name, d.score, d.created],
      }),
    )
  }
  for (const r of await Promise.all(inserts)) equal(r.rowCount, 1, 'rows inserted')
  equal(await scalar(c, 'SELECT count(*) FROM node_users'), '60', 'count(*) over all shards')

  step('sharded: point selects by key with a named statement')
  for (const [id, d] of data) {
    const r = await c.query({ name: 'node_users_get', text: 'SELECT name, score, created FROM node_users WHERE id = $1', values: [id] })
    equal(r.rows, [d], `point select id=${id}`)
  }

  step('sharded: scatter ORDER BY ... LIMIT, aggregates')
  const want = [...data.entries()]
    .sort(([a, x], [b, y]) => Number(y.score) - Number(x.score) || a - b)
    .slice(0, 5)
    .map(([id, d]) => ({ id: String(id), name: d.name, score: d.score }))
  equal((await c.query('SELECT id, name, score FROM node_users ORDER BY score DESC, id LIMIT 5')).rows, want, 'ORDER BY score DESC, id LIMIT 5')
  const sum = [...data.values()].reduce((s, d) => s + Math.round(Number(d.score) * 100), 0) / 100
  const agg = (await c.query('SELECT count(*), sum(score), min(created), max(id) FROM node_users')).rows[0]
  equal(agg, { count: '60', sum: sum.toFixed(2), min: new Date(Date.UTC(2024, 0, 2)), max: '60' }, 'count/sum/min/max')
  const r = await c.query({ name: 'node_users_after', text: 'SELECT id FROM node_users WHERE id > $1 ORDER BY id LIMIT 3', values: [50] })
  equal(r.rows, [{ id: '51' }, { id: '52' }, { id: '53' }], 'scatter with a parameter')

  step('sharded: transactions across shards commit and roll back')
  await c.query('BEGIN')
  for (let i = 201; i <= 205; i++) await c.query("INSERT INTO node_users (id, name) VALUES ($1, 'tx')", [i])
  equal(await scalar(c, "SELECT count(*) FROM node_users WHERE name = 'tx'"), '5', 'own writes across shards')
  await c.query('ROLLBACK')
  equal(await scalar(c, "SELECT count(*) FROM node_users WHERE name = 'tx'"), '0', 'after rollback')
  await c.query('BEGIN')
  for (let i = 201; i <= 205; i++) await c.query("INSERT INTO node_users (id, name) VALUES ($1, 'tx')", [i])
  await c.query('COMMIT')
  equal(await scalar(c, "SELECT count(*) FROM node_users WHERE name = 'tx'"), '5', 'after commit')
  await c.query('BEGIN')
  await c.query("INSERT INTO node_users (id, name) VALUES (301, 'doomed')")
  await expectError('23505', c.query("INSERT INTO node_users (id, name) VALUES ($1, 'dup')", [1]), 'duplicate key')
  await expectError('25P02', c.query('SELECT 1'), 'after error')
  await c.query('ROLLBACK')
  equal(await scalar(c, 'SELECT count(*) FROM node_users WHERE id = 301'), '0', 'insert before the error')

  step('sharded: a pool running point and scatter queries concurrently')
  const pool = new pg.Pool({ ...config(), max: 4 })
  try {
    const got = await Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        i % 3 === 0
          ? pool.query('SELECT count(*) FROM node_users')
          : pool.query({ name: 'node_users_name', text: 'SELECT name FROM node_users WHERE id = $1', values: [i] }),
      ),
    )
    got.forEach((res, i) => equal(res.rows[0], i % 3 === 0 ? { count: '65' } : { name: `user${i}` }, `pooled query ${i}`))
  } finally {
    await pool.end()
  }
  await c.end()
}

const mode = process.argv[2] ?? 'plain'
if (mode !== 'plain' && mode !== 'sharded') {
  console.error('usage: node client.js plain|sharded')
  process.exit(2)
}
;(mode === 'plain' ? plain() : sharded()).then(
  () => console.log(`OK: all ${mode} checks passed`),
  (e) => {
    if (!(e instanceof CheckFailed)) console.error(e)
    console.error(`CHECK FAILED: ${e instanceof CheckFailed ? '' : 'unexpected error: '}${e.message}`)
    process.exit(1)
  },
)
