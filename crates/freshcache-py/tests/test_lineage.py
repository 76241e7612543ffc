"""Lineage from Python: values derived from others are fresh only while their inputs are, tags
invalidate groups of values, and the guard names the input that made a signal stale."""

from __future__ import annotations

import pytest

import freshcache

NEWS = "news:espn:a1"
ODDS = "odds:g42:1700000000"
FEATURES = "llm:features:c7:2026-12-04"


def test_a_derived_value_is_fresh_until_an_input_changes(cache: freshcache.Cache) -> None:
    cache.set(NEWS, "article v1")
    cache.set(ODDS, {"home": 1.91})
    cache.set(FEATURES, [0.1, 0.2], derived_from=[NEWS, ODDS])
    hit = cache.get(FEATURES)
    assert hit is not None and hit.decode() == [0.1, 0.2]
    # Rewriting an input with the same content changes nothing ...
    cache.set(NEWS, "article v1")
    assert cache.get(FEATURES) is not None
    # ... a corrected article makes the features not fresh, and the guard says why.
    cache.set(NEWS, "article v2 (corrected)")
    assert cache.get(FEATURES) is None
    with pytest.raises(freshcache.StaleSignals) as refused:
        cache.require_fresh("run-1", [FEATURES])
    (signal,) = refused.value.signals
    assert signal["key"] == FEATURES and signal["verdict"] == "stale"
    assert NEWS in (signal["reason"] or ""), signal
    assert [i["key"] for i in signal["inputs"] if i["verdict"] != "fresh"] == [NEWS]
    # Recomputed from the corrected article: fresh again.
    cache.set(FEATURES, [0.3, 0.4], derived_from=[NEWS, ODDS])
    assert FEATURES in cache.require_fresh("run-2", [FEATURES])


def test_a_missing_input_refuses_the_write_and_names_it(cache: freshcache.Cache) -> None:
    cache.set(ODDS, {"home": 1.91})
    with pytest.raises(freshcache.InputNotFresh) as refused:
        cache.set(FEATURES, [0.1], derived_from=[NEWS, ODDS])
    assert refused.value.input == NEWS
    assert isinstance(refused.value, freshcache.Error)
    assert cache.get(FEATURES) is None, "nothing was written"
    # Opting out stores it anyway.
    cache.set(FEATURES, [0.1], derived_from=[NEWS, ODDS], unchecked_inputs=True)
    assert cache.inspect(FEATURES)["on_disk"]


def test_an_expired_input_makes_the_derived_value_stale(
    cache: freshcache.Cache, clock: freshcache.ManualClock
) -> None:
    cache.set(ODDS, {"home": 1.91}, ttl=10)
    cache.set(FEATURES, [0.1], derived_from=[ODDS])
    clock.advance(9.9)
    assert cache.get(FEATURES) is not None
    clock.advance(0.1)
    assert cache.get(FEATURES) is None


def test_a_cycle_is_refused(cache: freshcache.Cache) -> None:
    a, b = "llm:features:a:1", "llm:features:b:1"
    cache.set(a, [1.0])
    cache.set(b, [2.0], derived_from=[a])
    with pytest.raises(freshcache.LineageCycle) as refused:
        cache.set(a, [3.0], derived_from=[b])
    assert a in refused.value.path and b in refused.value.path
    hit = cache.get(a)
    assert hit is not None and hit.decode() == [1.0], "the old value stands"


def test_a_tag_invalidation_makes_every_tagged_value_not_fresh(
    cache: freshcache.Cache, clock: freshcache.ManualClock
) -> None:
    cache.set("news:espn:a1", "one", tags=["espn"])
    cache.set("news:espn:a2", "two", tags=["espn", "front"])
    cache.set("news:bbc:b1", "three", tags=["bbc"])
    at = cache.invalidate_tag("espn")
    assert at > 0
    assert cache.get("news:espn:a1") is None
    assert cache.get("news:espn:a2") is None
    assert cache.get("news:bbc:b1") is not None
    # Written again after the invalidation (a value stamped at its very instant is not): fresh.
    clock.advance(0.001)
    cache.set("news:espn:a1", "one, again", tags=["espn"])
    assert cache.get("news:espn:a1") is not None
    with pytest.raises(freshcache.Error):
        cache.invalidate_tag("bad,tag")
