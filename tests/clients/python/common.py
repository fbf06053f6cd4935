"""Shared by the Python client programs: connection parameters and check helpers.

Connection parameters come from the environment, with libpq's names: PGHOST, PGPORT, PGUSER,
PGPASSWORD, PGDATABASE, PGSSLMODE (default "disable") and PGSSLROOTCERT (a CA file; when set,
the programs also connect with sslmode=verify-full to host "localhost"). PGMD5USER and
PGMD5PASSWORD name a user that logs in with md5.
"""

import os
import sys
import time


def env(name, default=None):
    value = os.environ.get(name, default)
    if value is None:
        fail(f"environment variable {name} is not set")
    return value


class Conn:
    host = property(lambda self: env("PGHOST"))
    port = property(lambda self: int(env("PGPORT")))
    user = property(lambda self: env("PGUSER"))
    password = property(lambda self: env("PGPASSWORD"))
    dbname = property(lambda self: env("PGDATABASE"))
    sslmode = property(lambda self: env("PGSSLMODE", "disable"))
    sslrootcert = property(lambda self: os.environ.get("PGSSLROOTCERT"))
    md5_user = property(lambda self: env("PGMD5USER"))
    md5_password = property(lambda self: env("PGMD5PASSWORD"))


CONN = Conn()


class CheckFailed(Exception):
    pass


def fail(msg):
    raise CheckFailed(msg)


def check(cond, msg):
    if not cond:
        fail(msg)


def equal(got, want, what):
    if got != want:
        fail(f"{what}: got {got!r}, want {want!r}")


def step(name):
    """Prints the step being checked, so a failure's output shows how far the program got."""
    print(f"-- {name}", flush=True)


class Timer:
    def __enter__(self):
        self.start = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.elapsed = time.monotonic() - self.start
        return False


def main(run):
    """Runs `run(mode)` for argv[1] in ("plain", "sharded"); exit 1 with a message on failure."""
    mode = sys.argv[1] if len(sys.argv) > 1 else "plain"
    if mode not in ("plain", "sharded"):
        print(f"usage: {sys.argv[0]} plain|sharded", file=sys.stderr)
        sys.exit(2)
    try:
        run(mode)
    except CheckFailed as e:
        print(f"CHECK FAILED: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except Exception as e:  # an unexpected driver error is a failed check too
        import traceback

        traceback.print_exc()
        print(f"CHECK FAILED: unexpected {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    print(f"OK: all {mode} checks passed", flush=True)
