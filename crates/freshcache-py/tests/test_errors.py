"""Bad input raises the typed exception and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

import freshcache

CONFIG = """
cache:
  cache_dir: "{dir}"
  data_types:
    weather:
      prefix: "weather:"
      ttl: 10m
      max_value_size: 1KiB
"""


def _entries(c: freshcache.Cache) -> int:
    return sum(int(t["entries"]) for t in c.stats()["tiers"] if t["tier"] == "disk")


def test_invalid_key_raises_and_writes_nothing(cache: freshcache.Cache) -> None:
    for bad in ["", "odds:", "odds:../../etc:1", "odds:g 1:2", "x" * 600]:
        with pytest.raises(freshcache.InvalidKey):
            cache.set(bad, "v")
    with pytest.raises(freshcache.InvalidKey):
        cache.set("nosuchtype:a:b", "v")
    assert _entries(cache) == 0
    assert isinstance(freshcache.InvalidKey("x"), freshcache.Error)


def test_oversized_value_raises_and_writes_nothing(tmp_path: Path) -> None:
    cfg = tmp_path / "runtime.yml"
    cfg.write_text(CONFIG.format(dir=tmp_path / "c"))
    with freshcache.Cache.open(cfg) as c:
        c.set("weather:paris:now", "x" * 1024)
        with pytest.raises(freshcache.ValueTooLarge) as info:
            c.set("weather:paris:later", "x" * 1025)
        assert info.value.size == 1025 and info.value.max_size == 1024
        assert c.get("weather:paris:later") is None
        assert not c.inspect("weather:paris:later")["on_disk"]
        assert _entries(c) == 1


def test_object_with_no_codec_raises_and_writes_nothing(cache: freshcache.Cache) -> None:
    class Opaque:
        pass

    for bad in [Opaque(), {1, 2}, {"a": Opaque()}, float("nan")]:
        with pytest.raises(freshcache.CodecError):
            cache.set("news:espn:x", bad)
    with pytest.raises(freshcache.CodecError):
        cache.set("news:espn:x", Opaque(), codec="msgpack")
    assert cache.get("news:espn:x") is None
    assert _entries(cache) == 0


def test_config_error_names_file_line_and_field(tmp_path: Path) -> None:
    cfg = tmp_path / "runtime.yml"
    cfg.write_text("cache:\n  cache_dir: x\n  ttl:\n    odds_data: soon\n")
    with pytest.raises(freshcache.ConfigError) as info:
        freshcache.Cache.open(cfg)
    err = info.value
    assert err.file == str(cfg)
    assert err.line == 4
    assert err.field.endswith("odds_data")


def test_unknown_override_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(freshcache.ConfigError):
        freshcache.Cache(cache_dir=tmp_path, no_such_field=1)


def test_unreachable_redis_is_redis_unavailable(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(freshcache.RedisUnavailable):
        freshcache.Cache(cache_dir=tmp_path, redis_url=f"redis://127.0.0.1:{port}/0", redis={"connect_timeout": "300ms"})


def test_closed_cache_raises(tmp_path: Path) -> None:
    c = freshcache.Cache(cache_dir=tmp_path)
    c.close()
    c.close()
    assert c.closed
    with pytest.raises(freshcache.CacheClosed):
        c.get("odds:g1:1")


def test_keys_read_back_right_however_often_and_however_many(cache: freshcache.Cache) -> None:
    # `get` remembers keys it has validated; a bad key must still fail every time, and a
    # `str` subclass that claims equality with another key must not be taken for it.
    cache.set("odds:g1:1", b"one")
    cache.set("odds:g2:1", b"two")
    for _ in range(2):
        with pytest.raises(freshcache.InvalidKey):
            cache.get("odds::1")

    class Sly(str):
        def __hash__(self) -> int:
            return hash("odds:g1:1")

        def __eq__(self, other: object) -> bool:
            return True

    for _ in range(2):
        one, two = cache.get("odds:g1:1"), cache.get(Sly("odds:g2:1"))
        assert one is not None and two is not None
        assert (one.to_bytes(), two.to_bytes()) == (b"one", b"two")
        assert two.key == "odds:g2:1"
    # More distinct keys than are remembered: the memo starts over and stays right.
    for i in range(5000):
        assert cache.get(f"odds:m{i}:1") is None
    hit = cache.get("odds:g2:1")
    assert hit is not None and hit.to_bytes() == b"two"
