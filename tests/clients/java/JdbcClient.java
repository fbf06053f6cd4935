// pgJDBC through pg-router in transaction pooling mode.
//
// Usage: java -cp .:postgresql.jar JdbcClient plain|sharded. Connection parameters from libpq's
// environment names: PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGSSLMODE (disable|require),
// PGSSLROOTCERT (CA file: also connect with sslmode=verify-full to host "localhost"), PGMD5USER
// and PGMD5PASSWORD (a user that logs in with md5). Exits 1 with "CHECK FAILED: ..." on the first
// check that does not hold.

import java.io.StringReader;
import java.io.StringWriter;
import java.math.BigDecimal;
import java.sql.Array;
import java.sql.BatchUpdateException;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Savepoint;
import java.sql.Statement;
import java.sql.Types;
import java.time.LocalDate;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Objects;
import java.util.Properties;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import org.postgresql.PGConnection;
import org.postgresql.copy.CopyManager;

public final class JdbcClient {
  static final class CheckFailed extends RuntimeException {
    CheckFailed(String msg) {
      super(msg);
    }
  }

  interface SqlAction {
    void run() throws Exception;
  }

  static String env(String name, String fallback) {
    String v = System.getenv(name);
    if (v == null) v = fallback;
    if (v == null) throw new CheckFailed("environment variable " + name + " is not set");
    return v;
  }

  static void check(boolean cond, String msg) {
    if (!cond) throw new CheckFailed(msg);
  }

  static void equal(Object got, Object want, String what) {
    boolean same =
        (got instanceof byte[] && want instanceof byte[])
            ? Arrays.equals((byte[]) got, (byte[]) want)
            : (got instanceof Object[] && want instanceof Object[])
                ? Arrays.deepEquals((Object[]) got, (Object[]) want)
                : Objects.equals(got, want);
    if (!same) throw new CheckFailed(what + ": got " + show(got) + ", want " + show(want));
  }

  static String show(Object o) {
    if (o instanceof byte[]) return Arrays.toString((byte[]) o);
    if (o instanceof Object[]) return Arrays.deepToString((Object[]) o);
    return String.valueOf(o);
  }

  static void step(String name) {
    System.out.println("-- " + name);
    System.out.flush();
  }

  static SQLException expectError(String sqlstate, SqlAction action, String what) throws Exception {
    try {
      action.run();
    } catch (SQLException e) {
      SQLException cause = e;
      if (e instanceof BatchUpdateException && e.getNextException() != null) cause = e.getNextException();
      equal(cause.getSQLState(), sqlstate, what + ": SQLSTATE (" + cause.getMessage() + ")");
      return cause;
    }
    throw new CheckFailed(what + ": no error");
  }

  static final String SSLMODE = env("PGSSLMODE", "disable");

  static Connection connect(String... extra) throws SQLException {
    Properties p = new Properties();
    p.setProperty("user", env("PGUSER", null));
    p.setProperty("password", env("PGPASSWORD", null));
    p.setProperty("sslmode", SSLMODE);
    p.setProperty("connectTimeout", "10");
    for (int i = 0; i + 1 < extra.length; i += 2) p.setProperty(extra[i], extra[i + 1]);
    String host = p.getProperty("host", env("PGHOST", null));
    p.remove("host");
    String url = "jdbc:postgresql://" + host + ":" + env("PGPORT", null) + "/" + env("PGDATABASE", null);
    return DriverManager.getConnection(url, p);
  }

  static Object scalar(Connection c, String sql, Object... params) throws SQLException {
    try (PreparedStatement ps = c.prepareStatement(sql)) {
      for (int i = 0; i < params.length; i++) ps.setObject(i + 1, params[i]);
      try (ResultSet rs = ps.executeQuery()) {
        check(rs.next(), "no row from " + sql);
        return rs.getObject(1);
      }
    }
  }

  static void exec(Connection c, String sql) throws SQLException {
    try (Statement s = c.createStatement()) {
      s.execute(sql);
    }
  }

  // ---- plain mode -------------------------------------------------------------------------

  static void checkLogin() throws Exception {
    step("SCRAM login; wrong password is 28P01; md5 user");
    try (Connection c = connect()) {
      equal(scalar(c, "SELECT 1"), 1, "SELECT 1");
    }
    expectError("28P01", () -> connect("password", "wrong").close(), "wrong password");
    try (Connection c = connect("user", env("PGMD5USER", null), "password", env("PGMD5PASSWORD", null))) {
      equal(scalar(c, "SELECT 1"), 1, "md5 login");
    }
    String ca = System.getenv("PGSSLROOTCERT");
    if (ca != null) {
      step("TLS verify-full against the CA file, host name localhost");
      try (Connection c = connect("host", "localhost", "sslmode", "verify-full", "sslrootcert", ca)) {
        equal(scalar(c, "SELECT 3"), 3, "query over verify-full");
      }
      // sslmode=require is checked by every other connection of this run; without TLS on the
      // router they would all fail.
    }
  }

  static final OffsetDateTime TS = OffsetDateTime.of(2024, 2, 29, 12, 34, 56, 789123000, ZoneOffset.UTC);
  static final LocalDate DATE = LocalDate.of(1999, 12, 31);
  static final UUID ID = UUID.fromString("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
  static final BigDecimal NUM = new BigDecimal("12345678901234567890.123456789");
  static final String TEXT = "h\u00e9llo\tworld \uD83D\uDE00 'quoted'";
  static final byte[] BYTES = new byte[256];

  static {
    for (int i = 0; i < 256; i++) BYTES[i] = (byte) i;
  }

  static void bindTypes(Connection c, PreparedStatement ps, int at) throws SQLException {
    ps.setShort(at, (short) -32768);
    ps.setInt(at + 1, Integer.MAX_VALUE);
    ps.setLong(at + 2, -(1L << 62));
    ps.setBigDecimal(at + 3, NUM);
    ps.setDouble(at + 4, 0.1 + 0.2);
    ps.setString(at + 5, TEXT);
    ps.setBytes(at + 6, BYTES);
    ps.setBoolean(at + 7, true);
    ps.setObject(at + 8, TS);
    ps.setObject(at + 9, DATE);
    ps.setObject(at + 10, ID);
    ps.setObject(at + 11, "{\"k\": [1, 2, {\"x\": null}], \"s\": \"\u00fc\"}", Types.OTHER);
    ps.setArray(at + 12, c.createArrayOf("int4", new Integer[] {1, null, 3}));
    ps.setArray(at + 13, c.createArrayOf("text", new String[] {"a", "b c", null, "q\"uote"}));
    ps.setNull(at + 14, Types.VARCHAR);
  }

  static void checkTypeRow(ResultSet rs, int at, String what) throws SQLException {
    equal(rs.getShort(at), (short) -32768, what + " int2");
    equal(rs.getInt(at + 1), Integer.MAX_VALUE, what + " int4");
    equal(rs.getLong(at + 2), -(1L << 62), what + " int8");
    equal(rs.getBigDecimal(at + 3), NUM, what + " numeric");
    equal(rs.getDouble(at + 4), 0.1 + 0.2, what + " float8");
    equal(rs.getString(at + 5), TEXT, what + " text");
    equal(rs.getBytes(at + 6), BYTES, what + " bytea");
    equal(rs.getBoolean(at + 7), true, what + " bool");
    equal(rs.getObject(at + 8, OffsetDateTime.class), TS, what + " timestamptz");
    equal(rs.getObject(at + 9, LocalDate.class), DATE, what + " date");
    equal(rs.getObject(at + 10, UUID.class), ID, what + " uuid");
    equal(rs.getString(at + 11), "{\"k\": [1, 2, {\"x\": null}], \"s\": \"\u00fc\"}", what + " jsonb");
    equal(rs.getArray(at + 12).getArray(), new Integer[] {1, null, 3}, what + " int4[]");
    equal(rs.getArray(at + 13).getArray(), new String[] {"a", "b c", null, "q\"uote"}, what + " text[]");
    equal(rs.getString(at + 14), null, what + " NULL");
    check(rs.wasNull(), what + " NULL: wasNull");
  }

  static final String CASTS =
      "?::int2, ?::int4, ?::int8, ?::numeric, ?::float8, ?::text, ?::bytea, ?::bool, ?::timestamptz,"
          + " ?::date, ?::uuid, ?::jsonb, ?::int4[], ?::text[], ?::text";

  static void checkTypes(Connection c, String mode) throws Exception {
    step("types (" + mode + "): parameters and results, text and (after the threshold) binary");
    try (PreparedStatement ps = c.prepareStatement("SELECT " + CASTS)) {
      for (int round = 0; round < 7; round++) {
        bindTypes(c, ps, 1);
        try (ResultSet rs = ps.executeQuery()) {
          check(rs.next(), "no row");
          checkTypeRow(rs, 1, mode + " round " + round);
        }
      }
    }
    String table = "jdbc_types";
    exec(c, "DROP TABLE IF EXISTS " + table);
    exec(
        c,
        "CREATE TABLE " + table + " (id int PRIMARY KEY, c0 int2, c1 int4, c2 int8, c3 numeric, c4 float8,"
            + " c5 text, c6 bytea, c7 bool, c8 timestamptz, c9 date, c10 uuid, c11 jsonb, c12 int4[],"
            + " c13 text[], c14 text)");
    try (PreparedStatement ps =
        c.prepareStatement("INSERT INTO " + table + " VALUES (?, " + "?, ".repeat(14) + "?)")) {
      for (int id = 1; id <= 6; id++) {
        ps.setInt(1, id);
        bindTypes(c, ps, 2);
        equal(ps.executeUpdate(), 1, "insert " + id);
      }
    }
    try (Statement s = c.createStatement();
        ResultSet rs = s.executeQuery("SELECT * FROM " + table + " ORDER BY id")) {
      int n = 0;
      while (rs.next()) {
        checkTypeRow(rs, 2, mode + " stored row " + rs.getInt(1));
        n++;
      }
      equal(n, 6, "rows in " + table);
    }
    step("several statements in one Statement.execute");
    try (Statement s = c.createStatement()) {
      check(s.execute("SELECT 1 AS a; SELECT 'x' AS b, NULL AS c"), "first result is a result set");
      try (ResultSet rs = s.getResultSet()) {
        check(rs.next(), "first result row");
        equal(rs.getInt(1), 1, "first result");
      }
      check(s.getMoreResults(), "second result missing");
      try (ResultSet rs = s.getResultSet()) {
        check(rs.next(), "second result row");
        equal(rs.getString(1), "x", "second result");
      }
    }
  }

  // Runs once(i) -> backend pid while two other connections alternately hold and release a
  // backend (an open transaction), so the statement lands on several backends.
  interface PidStep {
    int run(int i) throws Exception;
  }

  static Set<Integer> distinctBackends(PidStep once) throws Exception {
    Set<Integer> pids = new HashSet<>();
    Connection[] holders = {connect(), connect()};
    boolean[] held = {false, false};
    try {
      for (Connection h : holders) h.setAutoCommit(false);
      for (int i = 0; i < 40; i++) {
        pids.add(once.run(i));
        int k = i % 2;
        if (held[k]) holders[k].rollback();
        else scalar(holders[k], "SELECT pg_backend_pid()");
        held[k] = !held[k];
      }
    } finally {
      for (Connection h : holders) h.close();
    }
    return pids;
  }

  static void checkPrepared() throws Exception {
    for (String threshold : new String[] {"1", "5"}) {
      step("server-side prepared statements, prepareThreshold=" + threshold + ", across backends");
      try (Connection c = connect("prepareThreshold", threshold);
          PreparedStatement ps = c.prepareStatement("SELECT ?::int4 * 2, pg_backend_pid()")) {
        Set<Integer> pids =
            distinctBackends(
                i -> {
                  ps.setInt(1, i);
                  try (ResultSet rs = ps.executeQuery()) {
                    check(rs.next(), "no row");
                    equal(rs.getInt(1), i * 2, "prepared statement result");
                    return rs.getInt(2);
                  }
                });
        check(pids.size() >= 2, "prepared statement ran on one backend only " + pids);
        // Inside explicit transactions too.
        c.setAutoCommit(false);
        for (int i = 0; i < 10; i++) {
          ps.setInt(1, i);
          try (ResultSet rs = ps.executeQuery()) {
            check(rs.next(), "no row");
            equal(rs.getInt(1), i * 2, "prepared statement in a transaction");
          }
          if (i % 3 == 2) c.commit();
        }
        c.commit();
        checkTypes(c, "prepareThreshold=" + threshold);
      }
    }
    step("preferQueryMode=simple");
    try (Connection c = connect("preferQueryMode", "simple")) {
      equal(scalar(c, "SELECT ?::int + 1", 41), 42, "simple-mode parameter");
    }
  }

  static void checkTransactions(Connection c) throws Exception {
    step("transactions: commit, rollback, savepoint");
    exec(c, "DROP TABLE IF EXISTS jdbc_t");
    exec(c, "CREATE TABLE jdbc_t (id int PRIMARY KEY, v text)");
    try (Connection tx = connect();
        PreparedStatement ins = tx.prepareStatement("INSERT INTO jdbc_t VALUES (?, ?)")) {
      tx.setAutoCommit(false);
      ins.setInt(1, 1);
      ins.setString(2, "committed");
      ins.executeUpdate();
      tx.commit();
      ins.setInt(1, 2);
      ins.setString(2, "rolled back");
      ins.executeUpdate();
      equal(scalar(tx, "SELECT count(*) FROM jdbc_t"), 2L, "own insert");
      tx.rollback();
      equal(scalar(c, "SELECT count(*) FROM jdbc_t WHERE id = 2"), 0L, "rolled-back insert visible");
      equal(scalar(c, "SELECT v FROM jdbc_t WHERE id = 1"), "committed", "committed insert");
      ins.setInt(1, 3);
      ins.setString(2, "outer");
      ins.executeUpdate();
      Savepoint sp = tx.setSavepoint();
      ins.setInt(1, 4);
      ins.setString(2, "inner");
      ins.executeUpdate();
      tx.rollback(sp);
      tx.commit();
      equal(scalar(c, "SELECT string_agg(id::text, ',' ORDER BY id) FROM jdbc_t"), "1,3", "after savepoint");

      step("error inside a transaction: 22012, then 25P02, ROLLBACK, connection usable");
      ins.setInt(1, 5);
      ins.setString(2, "doomed");
      ins.executeUpdate();
      expectError("22012", () -> scalar(tx, "SELECT 1/0"), "1/0");
      expectError("25P02", () -> scalar(tx, "SELECT 1"), "after error");
      tx.rollback();
      equal(scalar(tx, "SELECT count(*) FROM jdbc_t WHERE id = 5"), 0L, "insert before the error");
      tx.commit();
    }
  }

  static void checkBatches(Connection c) throws Exception {
    step("addBatch/executeBatch (one pipelined batch), autocommit and in a transaction");
    exec(c, "DROP TABLE IF EXISTS jdbc_batch");
    exec(c, "CREATE TABLE jdbc_batch (id int PRIMARY KEY, v text)");
    for (String rewrite : new String[] {"false", "true"}) {
      try (Connection b = connect("reWriteBatchedInserts", rewrite);
          PreparedStatement ps = b.prepareStatement("INSERT INTO jdbc_batch VALUES (?, ?)")) {
        int base = rewrite.equals("true") ? 1000 : 0;
        for (int i = 0; i < 200; i++) {
          ps.setInt(1, base + i);
          ps.setString(2, "v" + i);
          ps.addBatch();
        }
        int[] counts = ps.executeBatch();
        equal(counts.length, 200, "batch counts (reWriteBatchedInserts=" + rewrite + ")");
        b.setAutoCommit(false);
        for (int i = 200; i < 300; i++) {
          ps.setInt(1, base + i);
          ps.setString(2, "t" + i);
          ps.addBatch();
        }
        ps.executeBatch();
        b.commit();
      }
    }
    equal(scalar(c, "SELECT count(*) FROM jdbc_batch"), 600L, "rows after the batches");
    try (Connection b = connect();
        PreparedStatement ps = b.prepareStatement("INSERT INTO jdbc_batch VALUES (?, ?)")) {
      b.setAutoCommit(false);
      for (int id : new int[] {5000, 1, 5001}) {
        ps.setInt(1, id);
        ps.setString(2, "dup?");
        ps.addBatch();
      }
      expectError("23505", ps::executeBatch, "batch with a duplicate key");
      b.rollback();
      equal(scalar(b, "SELECT count(*) FROM jdbc_batch WHERE id >= 5000"), 0L, "rows of the failed batch");
    }
  }

  static void checkCopy(Connection c) throws Exception {
    step("CopyManager: COPY FROM STDIN, COPY TO STDOUT, failing COPY");
    exec(c, "DROP TABLE IF EXISTS jdbc_copy");
    exec(c, "CREATE TABLE jdbc_copy (id int PRIMARY KEY, name text, v float8)");
    StringBuilder data = new StringBuilder();
    for (int i = 0; i < 5000; i++) data.append(i).append("\tname-").append(i).append("-\u00e9\t").append(i % 97).append(".5\n");
    CopyManager cm = c.unwrap(PGConnection.class).getCopyAPI();
    long n = cm.copyIn("COPY jdbc_copy FROM STDIN", new StringReader(data.toString()));
    equal(n, 5000L, "copyIn row count");
    StringWriter out = new StringWriter();
    n = cm.copyOut("COPY (SELECT * FROM jdbc_copy ORDER BY id) TO STDOUT", out);
    equal(n, 5000L, "copyOut row count");
    check(out.toString().equals(data.toString()), "COPY OUT differs from what COPY IN loaded");
    expectError("23505", () -> cm.copyIn("COPY jdbc_copy FROM STDIN", new StringReader("1\tdup\t1\n")), "COPY dup");
    equal(scalar(c, "SELECT count(*) FROM jdbc_copy"), 5000L, "rows after the failed COPY");
  }

  static void checkCancel() throws Exception {
    step("setQueryTimeout(1) on pg_sleep(30) -> 57014");
    try (Connection c = connect();
        Statement s = c.createStatement()) {
      s.setQueryTimeout(1);
      long start = System.nanoTime();
      expectError("57014", () -> s.execute("SELECT pg_sleep(30)"), "query timeout");
      double took = (System.nanoTime() - start) / 1e9;
      check(took < 10, "query timeout took " + took + "s");
      s.setQueryTimeout(0);
      equal(scalar(c, "SELECT 42"), 42, "connection usable after the timeout");
    }
    step("Statement.cancel() from another thread -> 57014");
    ScheduledExecutorService timer = Executors.newSingleThreadScheduledExecutor();
    try (Connection c = connect();
        PreparedStatement s = c.prepareStatement("SELECT pg_sleep(30)")) {
      c.setAutoCommit(false);
      timer.schedule(
          () -> {
            try {
              s.cancel();
            } catch (SQLException e) {
              throw new RuntimeException(e);
            }
          },
          500,
          TimeUnit.MILLISECONDS);
      long start = System.nanoTime();
      expectError("57014", s::executeQuery, "Statement.cancel");
      double took = (System.nanoTime() - start) / 1e9;
      check(took < 10, "cancel took " + took + "s");
      c.rollback();
      equal(scalar(c, "SELECT 43"), 43, "connection usable after the cancel");
    } finally {
      timer.shutdownNow();
    }
  }

  static void checkSessionFeatures(Connection c) throws Exception {
    step("what transaction pooling refuses fails fast with 0A000 and a clear message");
    String[][] refused = {
      {"LISTEN jdbc_chan", "session pooling"},
      {"SELECT pg_advisory_lock(1)", "pg_advisory_xact_lock"},
      {"SET ROLE pgr", "SET ROLE"},
    };
    for (String[] r : refused) {
      long start = System.nanoTime();
      SQLException e = expectError("0A000", () -> exec(c, r[0]), r[0]);
      double took = (System.nanoTime() - start) / 1e9;
      check(e.getMessage().contains(r[1]), r[0] + ": message " + e.getMessage() + " lacks " + r[1]);
      check(took < 5, r[0] + ": refusal took " + took + "s");
    }
    equal(scalar(c, "SELECT 1"), 1, "connection usable after the refusals");

    step("setFetchSize in a transaction (Execute with a row limit, portal suspended)");
    try (Connection f = connect()) {
      f.setAutoCommit(false);
      try (Statement s = f.createStatement()) {
        s.setFetchSize(100);
        long sum = 0;
        int rows = 0;
        try (ResultSet rs = s.executeQuery("SELECT g FROM generate_series(1, 1000) g")) {
          while (rs.next()) {
            sum += rs.getLong(1);
            rows++;
          }
        }
        equal(rows, 1000, "rows fetched in chunks");
        equal(sum, 500500L, "sum of rows fetched in chunks");
      }
      f.commit();
    }
  }

  static void plain() throws Exception {
    checkLogin();
    try (Connection c = connect()) {
      checkTypes(c, "default connection");
      checkPrepared();
      checkTransactions(c);
      checkBatches(c);
      checkCopy(c);
      checkCancel();
      checkSessionFeatures(c);
    }
  }

  // ---- sharded mode -----------------------------------------------------------------------

  static String name(int id) {
    return "user" + id;
  }

  static BigDecimal score(int id) {
    return new BigDecimal((id * 7 % 50) + ".25");
  }

  static void sharded() throws Exception {
    checkLogin();
    try (Connection c = connect()) {
      step("sharded: DDL through the router, inserts with parameters across shards");
      exec(c, "DROP TABLE IF EXISTS jdbc_users");
      exec(
          c,
          "CREATE TABLE jdbc_users (id bigint PRIMARY KEY, name text NOT NULL, score numeric(10,2),"
              + " created timestamptz)");
      String insert = "INSERT INTO jdbc_users (id, name, score, created) VALUES (?, ?, ?, ?)";
      OffsetDateTime base = OffsetDateTime.of(2024, 1, 1, 0, 0, 0, 0, ZoneOffset.UTC);
      try (PreparedStatement ps = c.prepareStatement(insert)) {
        for (int id = 1; id <= 30; id++) {
          ps.setLong(1, id);
          ps.setString(2, name(id));
          ps.setBigDecimal(3, score(id));
          ps.setObject(4, base.plusDays(id));
          equal(ps.executeUpdate(), 1, "insert " + id);
        }
      }
      // A batch across shards inside a transaction (outside one, each shard would commit its
      // part on its own: see the README).
      c.setAutoCommit(false);
      try (PreparedStatement ps = c.prepareStatement(insert)) {
        for (int id = 31; id <= 60; id++) {
          ps.setLong(1, id);
          ps.setString(2, name(id));
          ps.setBigDecimal(3, score(id));
          ps.setObject(4, base.plusDays(id));
          ps.addBatch();
        }
        int[] counts = ps.executeBatch();
        equal(counts.length, 30, "batch counts");
      }
      c.commit();
      c.setAutoCommit(true);
      equal(scalar(c, "SELECT count(*) FROM jdbc_users"), 60L, "count(*) over all shards");

      for (String threshold : new String[] {"1", "5"}) {
        step("sharded: point selects by key, prepareThreshold=" + threshold);
        try (Connection p = connect("prepareThreshold", threshold);
            PreparedStatement ps = p.prepareStatement("SELECT name, score, created FROM jdbc_users WHERE id = ?")) {
          for (int round = 0; round < 2; round++) {
            p.setAutoCommit(round == 0);
            for (int id = 1; id <= 60; id++) {
              ps.setLong(1, id);
              try (ResultSet rs = ps.executeQuery()) {
                check(rs.next(), "no row for id " + id);
                equal(rs.getString(1), name(id), "name of " + id);
                equal(rs.getBigDecimal(2), score(id), "score of " + id);
                equal(rs.getObject(3, OffsetDateTime.class), base.plusDays(id), "created of " + id);
                check(!rs.next(), "two rows for id " + id);
              }
            }
            if (round == 1) p.commit();
          }
        }
      }

      step("sharded: scatter ORDER BY ... LIMIT, aggregates");
      List<Integer> ids = new ArrayList<>();
      for (int id = 1; id <= 60; id++) ids.add(id);
      ids.sort((a, b) -> score(b).compareTo(score(a)) != 0 ? score(b).compareTo(score(a)) : a - b);
      try (PreparedStatement ps =
          c.prepareStatement("SELECT id, name, score FROM jdbc_users ORDER BY score DESC, id LIMIT 5")) {
        for (int round = 0; round < 6; round++) {
          try (ResultSet rs = ps.executeQuery()) {
            for (int k = 0; k < 5; k++) {
              check(rs.next(), "row " + k + " of the top 5");
              equal(rs.getLong(1), (long) ids.get(k), "top-5 id " + k);
              equal(rs.getString(2), name(ids.get(k)), "top-5 name " + k);
            }
            check(!rs.next(), "more than 5 rows");
          }
        }
      }
      BigDecimal sum = BigDecimal.ZERO;
      for (int id = 1; id <= 60; id++) sum = sum.add(score(id));
      try (Statement s = c.createStatement();
          ResultSet rs = s.executeQuery("SELECT count(*), sum(score), min(created), max(id) FROM jdbc_users")) {
        check(rs.next(), "aggregate row");
        equal(rs.getLong(1), 60L, "count");
        equal(rs.getBigDecimal(2), sum, "sum");
        equal(rs.getObject(3, OffsetDateTime.class), base.plusDays(1), "min");
        equal(rs.getLong(4), 60L, "max");
      }

      step("sharded: transactions across shards commit and roll back");
      c.setAutoCommit(false);
      try (PreparedStatement ps = c.prepareStatement("INSERT INTO jdbc_users (id, name) VALUES (?, 'tx')")) {
        for (int id = 201; id <= 205; id++) {
          ps.setLong(1, id);
          ps.executeUpdate();
        }
        equal(scalar(c, "SELECT count(*) FROM jdbc_users WHERE name = 'tx'"), 5L, "own writes");
        c.rollback();
        equal(scalar(c, "SELECT count(*) FROM jdbc_users WHERE name = 'tx'"), 0L, "after rollback");
        for (int id = 201; id <= 205; id++) {
          ps.setLong(1, id);
          ps.executeUpdate();
        }
        c.commit();
        equal(scalar(c, "SELECT count(*) FROM jdbc_users WHERE name = 'tx'"), 5L, "after commit");
        ps.setLong(1, 301);
        ps.executeUpdate();
        ps.setLong(1, 1);
        expectError("23505", ps::executeUpdate, "duplicate key");
        expectError("25P02", () -> scalar(c, "SELECT 1"), "after error");
        c.rollback();
        equal(scalar(c, "SELECT count(*) FROM jdbc_users WHERE id = 301"), 0L, "insert before the error");
        c.commit();
      }
      c.setAutoCommit(true);

      step("sharded: COPY into a sharded table (CopyManager): each row on the shard of its key");
      CopyManager cm = c.unwrap(PGConnection.class).getCopyAPI();
      StringBuilder copyRows = new StringBuilder();
      for (int id = 900; id < 920; id++) copyRows.append(id).append("\tcopy\n");
      equal(cm.copyIn("COPY jdbc_users (id, name) FROM STDIN", new StringReader(copyRows.toString())), 20L, "rows copied");
      long placed = 0;
      for (long id = 900; id < 920; id++) {
        placed += (Long) scalar(c, "SELECT count(*) FROM jdbc_users WHERE id = ? AND name = 'copy'", id);
      }
      equal(placed, 20L, "copied rows found by their key");
      expectError(
          "22P02",
          () -> cm.copyIn("COPY jdbc_users (id, name) FROM STDIN", new StringReader("950\tok\nabc\tbad\n")),
          "COPY with a bad sharding key");
      equal(scalar(c, "SELECT count(*) FROM jdbc_users WHERE id = 950"), 0L, "rows of the failed COPY");
      try (Statement s = c.createStatement()) {
        equal(s.executeUpdate("DELETE FROM jdbc_users WHERE name = 'copy'"), 20, "copied rows deleted");
      }
      equal(scalar(c, "SELECT count(*) FROM jdbc_users"), 65L, "count after COPY and DELETE");

      step("sharded: setFetchSize outside a transaction (pgJDBC fetches everything at once)");
      List<Long> all = new ArrayList<>();
      try (Statement s = c.createStatement()) {
        s.setFetchSize(10);
        try (ResultSet rs = s.executeQuery("SELECT id FROM jdbc_users ORDER BY id")) {
          while (rs.next()) all.add(rs.getLong(1));
        }
        equal(all.size(), 65, "rows with fetchSize in autocommit");
      }

      step("sharded: setFetchSize in a transaction on one shard (row-limited Execute works)");
      c.setAutoCommit(false);
      try (PreparedStatement ps = c.prepareStatement("SELECT id, name FROM jdbc_users WHERE id = ?")) {
        ps.setFetchSize(1);
        ps.setLong(1, 7);
        try (ResultSet rs = ps.executeQuery()) {
          check(rs.next(), "row for id 7");
          equal(rs.getString(2), name(7), "name of 7 through a suspended portal");
          check(!rs.next(), "one row for id 7");
        }
      }
      c.commit();

      step("sharded: setFetchSize in a transaction across shards (the merged result in chunks)");
      for (int size : new int[] {1, 10, 65, 100}) {
        try (Statement s = c.createStatement()) {
          s.setFetchSize(size);
          List<Long> got = new ArrayList<>();
          try (ResultSet rs = s.executeQuery("SELECT id FROM jdbc_users ORDER BY id")) {
            while (rs.next()) got.add(rs.getLong(1));
          }
          equal(got.toString(), all.toString(), "ids fetched " + size + " at a time");
          try (ResultSet rs = s.executeQuery("SELECT count(*), min(id), max(id) FROM jdbc_users")) {
            check(rs.next(), "aggregate row");
            equal(rs.getLong(1), 65L, "count in chunks");
            equal(rs.getLong(2), all.get(0), "min in chunks");
            equal(rs.getLong(3), all.get(64), "max in chunks");
            check(!rs.next(), "one aggregate row");
          }
        }
      }
      c.commit();
      c.setAutoCommit(true);

      step("sharded: setMaxRows on a scatter query (Execute with a row limit)");
      try (Statement s = c.createStatement()) {
        s.setMaxRows(3);
        List<Long> got = new ArrayList<>();
        try (ResultSet rs = s.executeQuery("SELECT id FROM jdbc_users ORDER BY id")) {
          while (rs.next()) got.add(rs.getLong(1));
        }
        equal(got.toString(), all.subList(0, 3).toString(), "setMaxRows(3)");
      }
      equal(scalar(c, "SELECT count(*) FROM jdbc_users"), 65L, "usable after the refusals");
    }
  }

  public static void main(String[] args) {
    String mode = args.length > 0 ? args[0] : "plain";
    try {
      if (mode.equals("plain")) plain();
      else if (mode.equals("sharded")) sharded();
      else {
        System.err.println("usage: JdbcClient plain|sharded");
        System.exit(2);
      }
    } catch (CheckFailed e) {
      System.err.println("CHECK FAILED: " + e.getMessage());
      System.exit(1);
    } catch (Throwable e) {
      e.printStackTrace();
      System.err.println("CHECK FAILED: unexpected " + e);
      System.exit(1);
    }
    System.out.println("OK: all " + mode + " checks passed");
    System.exit(0);
  }
}
