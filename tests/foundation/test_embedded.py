"""The embedded Redis (hermes_site.embedded): reused only when it is the one started in this directory."""

from __future__ import annotations

import socket
from pathlib import Path

from hermes_site.embedded import start_redis, stop_redis


def test_a_stale_url_file_naming_another_redis_starts_a_fresh_one(tmp_path: Path) -> None:
    """A URL file left by a killed run named a port another Redis had taken since: `make run` took that server for
    its own and Celery made its queues in its database 0."""
    other_url, other = start_redis(directory=tmp_path / "other")  # someone else's Redis, on the stale port
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "url").write_text(other_url)
    url, proc = start_redis(directory=ours)
    try:
        assert proc is not None and url != other_url, "another Redis was taken for the embedded one"
        assert (ours / "url").read_text() == url and (ours / "redis.pid").read_text() == str(proc.pid)
        # The one started here is reused (a second start while it runs), as before.
        again, second = start_redis(directory=ours)
        assert (again, second) == (url, None)
    finally:
        stop_redis(proc, directory=ours)
        stop_redis(other, directory=tmp_path / "other")


def test_a_stale_url_file_naming_something_else_starts_a_fresh_one(tmp_path: Path) -> None:
    """Not Redis at all (a server that accepts and never answers): no hang, a fresh server."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        stale = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        (tmp_path / "url").write_text(stale)
        url, proc = start_redis(directory=tmp_path)
    try:
        assert proc is not None and url != stale
    finally:
        stop_redis(proc, directory=tmp_path)
