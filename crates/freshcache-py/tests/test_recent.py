"""Memory hits handed out again: `get` keeps the hits it returned and hands one out again only
while a lookup would answer the same — never after a change, past the TTL, after close, or in a
forked child."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import freshcache
from conftest import in_forked_child, wait_for

KEY = "odds:g42:1700000000"  # odds_data: 60 s


def memory_hits(c: freshcache.Cache) -> int:
    for row in c.stats()["tiers"]:
        if row["tier"] == "memory":
            return int(row["hits"])
    raise KeyError("memory")


def test_same_reading_same_object_later_reading_new_age(
    cache: freshcache.Cache, clock: freshcache.ManualClock
) -> None:
    cache.set(KEY, b"x" * 256)
    first = cache.get(KEY)
    assert first is not None and first.tier == "memory"
    again = cache.get(KEY)
    assert again is first, "same clock reading, nothing changed: the kept hit"
    assert again.value is first.value, "its bytes are made once"
    clock.advance(0.25)
    later = cache.get(KEY)
    assert later is not None and later is not first
    assert abs(later.age - 0.25) < 1e-6 and abs(later.remaining - 59.75) < 1e-6
    assert abs(first.age) < 1e-6, "a hit handed out earlier keeps its own lookup's age"
    assert later.value == first.value and later.expires_at == first.expires_at


def test_a_kept_hit_nobody_holds_any_more_is_served_at_the_later_reading(
    cache: freshcache.Cache, clock: freshcache.ManualClock
) -> None:
    """The kept hit moves to the new reading only while nothing but the cache holds it: its
    age and remaining time are the later lookup's, and a hit someone holds is never changed."""
    cache.set(KEY, b"x" * 256)
    assert cache.get(KEY) is not None  # kept by the cache, dropped here
    clock.advance(0.25)
    later = cache.get(KEY)
    assert later is not None and later.tier == "memory"
    assert abs(later.age - 0.25) < 1e-6 and abs(later.remaining - 59.75) < 1e-6
    held = [later]
    clock.advance(0.25)
    again = cache.get(KEY)
    assert again is not None and again is not held[0]
    assert abs(held[0].age - 0.25) < 1e-6, "a hit someone holds keeps its lookup's age"
    assert abs(again.age - 0.5) < 1e-6 and abs(again.remaining - 59.5) < 1e-6
    del held, later, again
    clock.advance(59.5)
    assert cache.get(KEY) is None, "never past the TTL"
    assert memory_hits(cache) == 3


def test_never_past_the_ttl(cache: freshcache.Cache, clock: freshcache.ManualClock) -> None:
    cache.set(KEY, "v")
    assert cache.get(KEY) is not None
    clock.advance(59.999)
    assert cache.get(KEY) is not None
    clock.advance(0.001)
    assert cache.get(KEY) is None


def test_clock_set_back_is_judged_afresh(
    cache: freshcache.Cache, clock: freshcache.ManualClock
) -> None:
    start = clock.now()
    cache.set(KEY, "v")
    assert cache.get(KEY) is not None
    clock.set(start - 10)  # before the value was stored: a lookup does not serve it
    assert cache.get(KEY) is None


def test_every_change_is_seen_at_once(cache: freshcache.Cache) -> None:
    cache.set(KEY, "one")
    for _ in range(3):
        hit = cache.get(KEY)
        assert hit is not None and hit.decode() == "one"
    cache.set(KEY, "two")
    hit = cache.get(KEY)
    assert hit is not None and hit.decode() == "two"
    assert cache.delete(KEY)
    assert cache.get(KEY) is None

    cache.set("odds:g1:1", "a")
    assert cache.get("odds:g1:1") is not None
    assert cache.invalidate_prefix("odds:g1:") == 1
    assert cache.get("odds:g1:1") is None

    cache.set("news:espn:1", "article", tags=["espn"])
    assert cache.get("news:espn:1") is not None
    cache.invalidate_tag("espn")
    assert cache.get("news:espn:1") is None

    cache.set("odds:g2:1", "b")
    assert cache.get("odds:g2:1") is not None
    cache.invalidate_all()
    assert cache.get("odds:g2:1") is None


def test_a_derived_value_kept_goes_when_its_input_changes(cache: freshcache.Cache) -> None:
    cache.set("odds:g7:1", {"home": 1.9})
    cache.set("llm:features:g7:2026-12-04", [0.1, 0.2], derived_from=["odds:g7:1"])
    for _ in range(3):
        assert cache.get("llm:features:g7:2026-12-04") is not None
    cache.set("odds:g7:1", {"home": 2.2})
    assert cache.get("llm:features:g7:2026-12-04") is None


def test_another_instance_change_reaches_a_kept_hit(tmp_path: Path) -> None:
    # Real clocks: the other instance's change arrives through the index's change feed.
    with freshcache.Cache(cache_dir=tmp_path) as a, freshcache.Cache(cache_dir=tmp_path) as b:
        a.set(KEY, "one")
        hit = b.get(KEY)
        assert hit is not None and hit.decode() == "one"
        a.set(KEY, "two")

        def b_sees_two() -> bool:
            h = b.get(KEY)
            return h is not None and h.decode() == "two"

        wait_for(b_sees_two, "the other instance's write")
        a.delete(KEY)
        wait_for(lambda: b.get(KEY) is None, "the other instance's delete")


def test_hits_handed_out_again_are_counted(
    cache: freshcache.Cache, clock: freshcache.ManualClock
) -> None:
    cache.set(KEY, "v")
    before = memory_hits(cache)
    for i in range(1000):
        assert cache.get(KEY) is not None
        if i % 100 == 99:
            clock.advance(0.01)
    assert memory_hits(cache) - before == 1000


def test_hits_handed_out_again_reach_the_saved_counters(
    tmp_path: Path, clock: freshcache.ManualClock
) -> None:
    with freshcache.Cache(cache_dir=tmp_path, clock=clock) as c:
        c.set(KEY, "v")
        for _ in range(500):
            assert c.get(KEY) is not None
    # No stats() call before close: closing hands the kept hits' counts over to be saved.
    with freshcache.Cache(cache_dir=tmp_path, clock=clock) as again:
        assert memory_hits(again) >= 500


def test_nothing_kept_outlives_close(tmp_path: Path) -> None:
    c = freshcache.Cache(cache_dir=tmp_path)
    c.set(KEY, "v")
    assert c.get(KEY) is not None
    c.close()
    with pytest.raises(freshcache.CacheClosed):
        c.get(KEY)


def test_a_subclass_of_str_is_looked_up_not_kept(cache: freshcache.Cache) -> None:
    class Odd(str):
        def __hash__(self) -> int:
            return hash("odds:g1:1")

        def __eq__(self, other: object) -> bool:
            return True

    cache.set("odds:g1:1", "a")
    cache.set(KEY, "b")
    assert cache.get("odds:g1:1") is not None
    hit = cache.get(Odd(KEY))
    assert hit is not None and hit.decode() == "b"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_no_kept_hit(tmp_path: Path) -> None:
    c = freshcache.Cache(cache_dir=tmp_path)
    c.set(KEY, "parent")
    assert c.get(KEY) is not None  # kept

    def child() -> int:
        try:
            c.get(KEY)
            return 2
        except freshcache.CacheClosed:
            return 0

    assert in_forked_child(child) == 0
    c.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_the_parent_keeps_hits_again_after_each_fork(
    tmp_path: Path, clock: freshcache.ManualClock
) -> None:
    """The cache opened again after a fork hands kept hits out again, checked against its own
    counters: a change after the fork is still seen at once."""
    c = freshcache.Cache(cache_dir=tmp_path, clock=clock)
    c.set(KEY, b"x" * 256)
    for n in range(3):
        assert in_forked_child(lambda: 0) == 0
        first = c.get(KEY)  # the memory tier starts empty: read from disk, promoted
        second = c.get(KEY)
        assert second is not None and second.tier == "memory"
        assert c.get(KEY) is second, f"after fork {n + 1}: the kept hit is handed out again"
        c.set(KEY, b"y" * 256)
        changed = c.get(KEY)
        assert changed is not None and changed.value == b"y" * 256
        c.set(KEY, b"x" * 256)
        del first
    before = memory_hits(c)
    c.get(KEY)
    c.get(KEY)
    assert memory_hits(c) == before + 2
    c.close()
