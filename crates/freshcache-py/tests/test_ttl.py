"""TTL behaviour on the library's manual clock: a hit just before the TTL, a miss at it."""

from __future__ import annotations

from pathlib import Path

import freshcache


def test_hit_just_before_ttl_and_miss_at_it(
    cache: freshcache.Cache, clock: freshcache.ManualClock
) -> None:
    cache.set("odds:g42:1700000000", {"home": 1.91})  # odds_data: 60 s
    clock.advance(59.999)
    hit = cache.get("odds:g42:1700000000")
    assert hit is not None and not hit.stale
    assert abs(hit.remaining - 0.001) < 1e-6
    assert abs(hit.age - 59.999) < 1e-6
    clock.advance(0.001)
    assert cache.get("odds:g42:1700000000") is None


def test_ttl_overrides_apply_in_seconds(tmp_path: Path, clock: freshcache.ManualClock) -> None:
    with freshcache.Cache(cache_dir=tmp_path, ttl={"odds_data": 5}, clock=clock) as c:
        c.set("odds:g1:1", "x")
        hit = c.get("odds:g1:1")
        assert hit is not None and hit.ttl == 5.0
        assert hit.expires_at == clock.now() + 5
        clock.advance(5)
        assert c.get("odds:g1:1") is None


def test_per_call_ttl_shorter_and_as_of(cache: freshcache.Cache, clock: freshcache.ManualClock) -> None:
    cache.set("odds:g1:2", "x", ttl=10)
    clock.advance(9.9)
    assert cache.get("odds:g1:2") is not None
    clock.advance(0.1)
    assert cache.get("odds:g1:2") is None
    # As of 50 s ago: 10 s of its 60 s are left.
    cache.set("odds:g1:3", "y", as_of=clock.now() - 50)
    hit = cache.get("odds:g1:3")
    assert hit is not None
    assert abs(hit.age - 50) < 1e-6 and abs(hit.remaining - 10) < 1e-6
    assert hit.as_of == clock.now() - 50


def test_value_already_past_its_ttl_is_refused(cache: freshcache.Cache, clock: freshcache.ManualClock) -> None:
    try:
        cache.set("odds:g1:4", "y", as_of=clock.now() - 61)
    except freshcache.AlreadyExpired:
        pass
    else:
        raise AssertionError("a value older than its TTL was accepted")
    assert cache.get("odds:g1:4") is None


def test_stale_is_returned_only_when_asked_and_marked(
    cache: freshcache.Cache, clock: freshcache.ManualClock
) -> None:
    cache.set("news:espn:1", "article")
    clock.advance(3600 + 10)
    assert cache.get("news:espn:1") is None
    cache.set("news:espn:2", "article 2")
    clock.advance(3600 + 10)
    hit = cache.get("news:espn:2", max_stale=30)
    assert hit is not None and hit.stale and hit.remaining == 0
    assert hit.decode() == "article 2"


def test_keyword_arguments_and_timedelta(cache: freshcache.Cache, clock: freshcache.ManualClock) -> None:
    import datetime as dt

    cache.set(key="odds:g5:1", value="v", ttl=dt.timedelta(seconds=20))
    assert cache.inspect(key="odds:g5:1")["fresh"]
    clock.advance(21)
    hit = cache.get(key="odds:g5:1", max_stale=dt.timedelta(seconds=5))
    assert hit is not None and hit.stale
    assert cache.delete(key="odds:g5:1")
