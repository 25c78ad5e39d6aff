"""`make test`'s pytest step: uses DATABASE_URL/REDIS_URL when set (CI), else the embedded defaults."""

from __future__ import annotations

import os
import subprocess
import sys

from hermes_site.embedded import REDIS_DIR, start_redis, stop_redis


def main(argv: list[str]) -> int:
    env = dict(os.environ)
    env.setdefault("HERMES_ENV", "test")
    proc = None
    if not env.get("REDIS_URL"):
        # A private embedded Redis for the run, so tests never share state with a `make run` instance.
        url, proc = start_redis(directory=REDIS_DIR.parent / "redis-test")
        env["REDIS_URL"] = url
    try:
        return subprocess.call([sys.executable, "-m", "pytest", *argv], env=env)
    finally:
        stop_redis(proc, directory=REDIS_DIR.parent / "redis-test")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
