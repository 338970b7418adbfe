"""Fixtures for the unit tests; the fakes themselves are in ``tests/fakes.py`` (``import fakes``)."""
from __future__ import annotations

import pytest

import fakes
from fakes import MemoryDeadLetters


@pytest.fixture()
def dead_letters() -> MemoryDeadLetters:
    return MemoryDeadLetters()


@pytest.fixture()
def env(monkeypatch, tmp_path):
    """The CLI's environment aimed at the scripted cluster; the settings a test may vary unset."""
    monkeypatch.setenv("ES_HOSTNAME", "http://scripted.invalid")
    monkeypatch.setenv("ES_AUTH", "none")
    monkeypatch.setenv("INDEX_PREFIX", "ct")
    for name in ("LOG_LEVEL", "RETENTION_MONTHS", "DEAD_LETTER_DIR", "INDEX_SHARDS", "INDEX_REPLICAS"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture()
def trail_dir(env):
    """A directory in CloudTrail's layout holding two good files (events a, b and c)."""
    root = env / "trail"
    for name, events in (("GoodFileNumber1", ["a", "b"]), ("GoodFileNumber2", ["c"])):
        path = root / fakes.log_key(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(fakes.trail_file(fakes.event(i) for i in events))
    return root
