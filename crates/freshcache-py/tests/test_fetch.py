"""`cache.fetch`: conditional HTTP fetch from a real loopback server with ETags."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path
from typing import Iterator

import pytest

import freshcache


@pytest.fixture
def feed() -> Iterator[tuple[str, list[int]]]:
    statuses: list[int] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            if self.headers.get("If-None-Match") == '"v1"':
                statuses.append(304)
                self.send_response(304)
                self.send_header("ETag", '"v1"')
                self.end_headers()
                return
            body = b'{"headline": "odds move"}'
            statuses.append(200)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("ETag", '"v1"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/espn.json", statuses
    server.shutdown()
    server.server_close()


def test_fetch_then_revalidate_with_etag(tmp_path: Path, feed: tuple[str, list[int]]) -> None:
    url, statuses = feed
    with freshcache.Cache(cache_dir=tmp_path) as c:
        hit = c.fetch(url, "news:espn:latest")
        assert hit is not None and hit.etag == '"v1"' and hit.codec == "json"
        assert hit.decode() == {"headline": "odds move"}
        assert c.last_fetch == ("fetched", 200)
        again = c.fetch(url, "news:espn:latest")
        assert again is not None and c.last_fetch == ("revalidated", 304)
        assert statuses == [200, 304]


def test_fetch_failure_is_a_fetch_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with freshcache.Cache(cache_dir=tmp_path) as c:
        with pytest.raises(freshcache.FetchError) as info:
            c.fetch(f"http://127.0.0.1:{port}/x", "news:espn:latest")
        assert info.value.kind == "connect"
