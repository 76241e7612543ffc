"""A prediction pipeline on freshcache from Python, end to end, in about fifteen seconds —
the same demo as the Rust `examples/pipeline.rs`:

- odds for game g42 update every second (60 s TTL in production; 3 s here so the demo moves);
- a local news feed is fetched every 2 s with ETags: unchanged articles cost a 304 and no
  body; the article changes every 5 s;
- LLM features per cluster are computed once by a loader and then served from the cache;
- every second an inference run asks the freshness guard for its signals — and is refused
  while the odds producer is stalled (seconds 6–9), naming the stale key;
- at the end, one run's audit trail proves what it used.

Run: `python crates/freshcache-py/examples/pipeline.py [--seconds N]`.
"""

from __future__ import annotations

import argparse
import http.server
import tempfile
import threading
import time

import numpy as np

import freshcache

TTL = {"odds_data": 3, "news_articles": 10, "llm_features": 30}  # seconds


def news_feed(started: float, counts: dict[str, int]) -> str:
    """A local feed whose article (and ETag) changes every 5 s; 304 to a matching ETag."""

    class Feed(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            version = int((time.monotonic() - started) // 5)
            etag = f'"article-v{version}"'
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return
            body = f'{{"headline":"Injury update, version {version}"}}'.encode()
            counts["full"] += 1
            counts["bytes"] += len(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Feed)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/espn.json"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=15)
    seconds = parser.parse_args().seconds

    with tempfile.TemporaryDirectory() as tmp, freshcache.Cache(cache_dir=tmp, ttl=TTL) as cache:
        started = time.monotonic()
        print(f"freshcache pipeline demo (Python): cache in {tmp}")
        stop = threading.Event()

        # Odds producer: a new price every second, stalled between seconds 6 and 9.
        odds = "odds:g42:live"
        stalled = threading.Event()

        def produce_odds() -> None:
            price = 1.90
            while not stop.is_set():
                if not stalled.is_set():
                    price += 0.01
                    cache.set(odds, round(price, 2))
                stop.wait(1)

        # News: conditional fetches every 2 s.
        counts = {"full": 0, "bytes": 0}
        feed = news_feed(started, counts)
        news = "news:espn:latest"

        def fetch_news() -> None:
            while not stop.is_set():
                try:
                    cache.fetch(feed, news)
                    outcome, status = cache.last_fetch
                    if outcome == "revalidated":
                        print("  news: 304 Not Modified — re-validated, nothing downloaded")
                    else:
                        print(f"  news: {status} {outcome}")
                except freshcache.FetchError as e:
                    print(f"  news: fetch failed: {e}")
                stop.wait(2)

        workers = [threading.Thread(target=f, daemon=True) for f in (produce_odds, fetch_news)]
        for w in workers:
            w.start()

        # LLM features per cluster: computed once by the decorated loader, then cached.
        computed = 0

        @cache.cached(key="llm:features:{cluster_id}:{date}", codec="numpy")
        def features(cluster_id: str, date: str) -> np.ndarray:
            nonlocal computed
            computed += 1
            time.sleep(0.2)  # the model call
            return np.array([0.12, -0.4, 0.93], dtype=np.float32)

        time.sleep(0.3)
        last_run = ""
        for second in range(seconds):
            if second == 6:
                print("  odds producer stalls (simulated outage)")
                stalled.set()
            if second == 10:
                print("  odds producer is back")
                stalled.clear()
            features("c7", "2026-11-24")
            run_id = f"py-run-{second:02}"
            keys = [odds, news, "llm:features:c7:2026-11-24"]
            try:
                with cache.inference_run(run_id) as run:
                    signals = run.require(keys)
                ages = ", ".join(f"{k.split(':')[0]} {h.age:.1f}s" for k, h in signals.items())
                print(f"t={second:>2}s {run_id}: inference OK   (ages: {ages})")
                last_run = run_id
            except freshcache.StaleSignals as refused:
                bad = "; ".join(
                    f"{s['key']} {s['verdict']}" for s in refused.signals if s["verdict"] != "fresh"
                )
                print(f"t={second:>2}s {run_id}: REFUSED        ({bad})")
            time.sleep(1)

        stop.set()
        for w in workers:
            w.join(5)
        print()
        print(
            f"features computed {computed} time(s); news: {counts['full']} full downloads "
            f"({counts['bytes']} bytes), the rest were 304s"
        )
        if last_run:
            print(f"audit of {last_run} (what the model was given):")
            for row in cache.audit(last_run):
                print(
                    f"  {row['key']:<30} {row['verdict']:<6} age {row['age_ms'] or 0:>6} ms"
                    f"  ttl {row['ttl_ms']:>6} ms  checksum {row['checksum'] or ''}"
                )
        for t in cache.stats()["data_types"]:
            print(f"  {t['data_type']:<14} hits {t['hits']:>3}  misses {t['misses']:>3}  sets {t['sets']:>3}")
        assert computed == 1, "features are computed once"


if __name__ == "__main__":
    main()
