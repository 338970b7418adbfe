"""Shared fixtures: where the real services are, and the trails tests load."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from datetime import date
from pathlib import Path

import pytest
import requests

import trailgen

ROOT = Path(__file__).resolve().parents[1]
EVENTS_DIR = Path(__file__).resolve().parent / "events"
CORPUS_DIR = ROOT.parent / "shared" / "corpus"
TRAILS_DIR = ROOT / "build" / "trails"
#: The generated trail the tests load: about the shared corpus's size in files (877 against 976),
#: two months (two monthly indexes), the planted intrusion; no broken or digest files, which
#: the tests that want them make themselves.
TEST_TRAIL = trailgen.TrailOptions(events=8000, start=date(2025, 3, 24), days=14, accounts=3,
                                   regions=("us-east-1", "eu-west-1"), broken_every=0, digests=False)
#: For a test that needs more monthly indexes than the test trail's two: five months, one account.
FIVE_MONTHS = trailgen.TrailOptions(events=3000, start=date(2025, 1, 13), days=112, accounts=1,
                                    regions=("us-east-1",), broken_every=0, digests=False)
#: Every test of a trail runs on the generated one, and on the shared corpus where it is there.
TRAILS = ["generated"] + (["corpus"] if (CORPUS_DIR / "AWSLogs").is_dir() else [])

OPENSEARCH_URL = os.environ.get(
    "OPENSEARCH_URL", f"http://127.0.0.1:{os.environ.get('OPENSEARCH_PORT', '9200')}"
)
MOTO_URL = os.environ.get("MOTO_URL", f"http://127.0.0.1:{os.environ.get('MOTO_PORT', '5000')}")


def _require(url: str, what: str) -> str:
    try:
        requests.get(url, timeout=5)
        return url
    except requests.RequestException as exc:
        problem = f"{type(exc).__name__}: {exc}"
    pytest.fail(f"{what} is not reachable at {url} ({problem}); start it with "
                "`make -f Makefile.pip services`", pytrace=False)


@pytest.fixture(scope="session")
def opensearch_url() -> str:
    """The real OpenSearch started by scripts/services.sh."""
    return _require(OPENSEARCH_URL, "OpenSearch")


@pytest.fixture(scope="session")
def moto_url() -> str:
    """The moto server started by scripts/services.sh."""
    return _require(MOTO_URL, "moto server")


@pytest.fixture()
def aws_env(moto_url, monkeypatch):
    """Point boto3 (and the aws CLI) at moto server with dummy credentials."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return moto_url


def make_trail(options: trailgen.TrailOptions = TEST_TRAIL) -> Path:
    """The trail made by ``trailgen`` with ``options``, kept under build/trails/ and made again
    only when the options or the generator's code change."""
    code = b"".join(path.read_bytes() for path in sorted(Path(trailgen.__file__).parent.glob("*.py")))
    name = hashlib.sha256(code + repr(options).encode()).hexdigest()[:16]
    root = TRAILS_DIR / name
    if not (root / trailgen.MANIFEST_NAME).is_file():
        TRAILS_DIR.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(dir=TRAILS_DIR, prefix=f".{name}-"))
        trailgen.generate(partial, options)
        try:
            partial.rename(root)
        except OSError:  # made meanwhile by another session: theirs is the same trail
            shutil.rmtree(partial)
    return root


def pytest_collection_modifyitems(config, items):
    """A test marked ``generated_trail_only`` uses a trail as its load, not as what it checks
    (faults, settings, secrets): it runs on the generated trail, and its corpus variant is
    deselected (counted as such in the summary, never as passed or skipped)."""
    extra = [item for item in items if item.get_closest_marker("generated_trail_only")
             and getattr(item, "callspec", None) is not None
             and item.callspec.params.get("corpus_dir") == "corpus"]
    if extra:
        config.hook.pytest_deselected(items=extra)
        dropped = set(extra)
        items[:] = [item for item in items if item not in dropped]


@pytest.fixture(scope="session", params=TRAILS)
def corpus_dir(request) -> Path:
    """A trail of CloudTrail files laid out as CloudTrail delivers them: the generated trail
    (``trailgen``), and the real events of ../shared/corpus where it is there."""
    return CORPUS_DIR if request.param == "corpus" else make_trail()


@pytest.fixture(scope="session")
def trails() -> list[Path]:
    """Every trail of ``corpus_dir``, for a test that loads them all into one costly setup."""
    return [CORPUS_DIR if trail == "corpus" else make_trail() for trail in TRAILS]


@pytest.fixture(scope="session")
def generated_trail() -> Path:
    """The generated test trail alone: its manifest says what the rules must find in it."""
    return make_trail()


@pytest.fixture(scope="session")
def trail_manifest(corpus_dir) -> dict | None:
    """What the generator says it wrote (None for the shared corpus)."""
    manifest = corpus_dir / trailgen.MANIFEST_NAME
    return trailgen.read_manifest(corpus_dir) if manifest.is_file() else None


@pytest.fixture(scope="session")
def five_month_files() -> list[tuple[str, bytes]]:
    """(key, bytes) of a generated trail of five months (FIVE_MONTHS)."""
    root = make_trail(FIVE_MONTHS)
    return [(str(p.relative_to(root)), p.read_bytes()) for p in sorted((root / "AWSLogs").rglob("*.json.gz"))]
