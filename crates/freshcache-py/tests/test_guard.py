"""The freshness guard refuses stale or missing signals, names them, and audits every check."""

from __future__ import annotations

import pytest

import freshcache

ODDS = "odds:g42:1700000000"
FEATURES = "llm:features:c7:2026-11-24"
NEWS = "news:espn:latest"


def test_require_fresh_returns_every_hit(cache: freshcache.Cache) -> None:
    cache.set(ODDS, {"home": 1.91})
    cache.set(FEATURES, [0.1, 0.2])
    signals = cache.require_fresh("run-1", [ODDS, FEATURES])
    assert set(signals) == {ODDS, FEATURES}
    assert signals[ODDS].decode() == {"home": 1.91}


def test_guard_refuses_a_stale_signal_and_names_it(
    cache: freshcache.Cache, clock: freshcache.ManualClock
) -> None:
    cache.set(ODDS, {"home": 1.91})
    cache.set(FEATURES, [0.1, 0.2])
    clock.advance(61)
    with pytest.raises(freshcache.StaleSignals) as info:
        cache.require_fresh("run-2", [FEATURES, ODDS, NEWS])
    err = info.value
    assert err.run_id == "run-2"
    assert err.stale_keys == [ODDS, NEWS]
    assert ODDS in str(err) and NEWS in str(err)
    by_key = {s["key"]: s for s in err.signals}
    assert by_key[ODDS]["verdict"] == "stale"
    assert by_key[ODDS]["age"] == pytest.approx(61)
    assert by_key[ODDS]["ttl"] == pytest.approx(60)
    assert by_key[NEWS]["verdict"] == "missing" and by_key[NEWS]["age"] is None
    assert by_key[FEATURES]["verdict"] == "fresh"


def test_inference_run_and_audit(cache: freshcache.Cache, clock: freshcache.ManualClock) -> None:
    cache.set(ODDS, {"home": 1.91}, etag='"v1"')
    with cache.inference_run("run-3") as run:
        signals = run.require([ODDS])
        assert signals[ODDS].etag == '"v1"'
    clock.advance(120)
    with pytest.raises(freshcache.StaleSignals):
        with cache.inference_run("run-4") as run:
            run.require([ODDS])
    rows = cache.audit("run-3")
    assert [(r["key"], r["verdict"]) for r in rows] == [(ODDS, "fresh")]
    assert rows[0]["ttl_ms"] == 60_000 and rows[0]["etag"] == '"v1"'
    assert rows[0]["checksum"] == signals[ODDS].checksum
    assert [r["verdict"] for r in cache.audit("run-4")] == ["stale"]
    assert cache.audit("no-such-run") == []


def test_bad_run_id_is_invalid(cache: freshcache.Cache) -> None:
    with pytest.raises(freshcache.InvalidKey):
        cache.require_fresh("run id with spaces", [ODDS])
