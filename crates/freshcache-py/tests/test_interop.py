"""Interop: the same files, bytes and audit trail as the `freshcache` CLI (Rust)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

import freshcache


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "runtime.yml"
    cfg.write_text(f'cache:\n  cache_dir: "{tmp_path / "cache"}"\n')
    return cfg


def _run(cli: Path, cfg: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(cli), "--config", str(cfg), *args], input=stdin, capture_output=True, timeout=60
    )


def test_value_set_from_python_is_read_by_the_cli(tmp_path: Path, cli: Path) -> None:
    cfg = _config(tmp_path)
    vec = np.arange(768, dtype=np.float32)
    with freshcache.Cache.open(cfg) as c:
        c.set("odds:g42:1700000000", {"home": 1.91})
        c.set("llm:features:c7:2026-11-24", vec)
        raw = c.get("llm:features:c7:2026-11-24")
        assert raw is not None
        expected = raw.to_bytes()
    out = _run(cli, cfg, "get", "odds:g42:1700000000")
    assert out.returncode == 0, out.stderr
    assert out.stdout == b'{"home":1.91}'
    out = _run(cli, cfg, "get", "llm:features:c7:2026-11-24")
    assert out.returncode == 0, out.stderr
    assert out.stdout == expected
    import io

    assert np.array_equal(np.load(io.BytesIO(out.stdout), allow_pickle=False), vec)


def test_value_set_by_the_cli_is_read_from_python(tmp_path: Path, cli: Path) -> None:
    cfg = _config(tmp_path)
    payload = bytes(range(256)) * 40
    out = _run(cli, cfg, "set", "news:espn:a1", "-", stdin=payload)
    assert out.returncode == 0, out.stderr
    with freshcache.Cache.open(cfg) as c:
        hit = c.get("news:espn:a1")
        assert hit is not None
        assert hit.to_bytes() == payload
        assert hit.tier == "disk"


def test_python_runs_audit_rows_show_in_the_cli(tmp_path: Path, cli: Path) -> None:
    cfg = _config(tmp_path)
    with freshcache.Cache.open(cfg) as c:
        c.set("odds:g1:1", "1.91")
        with c.inference_run("py-run-7") as run:
            run.require(["odds:g1:1"])
    out = _run(cli, cfg, "audit", "py-run-7", "--json")
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert "odds:g1:1" in text and "fresh" in text and "py-run-7" in text
