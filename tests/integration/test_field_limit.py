"""An index at its total-fields limit: the degraded events are counted apart and warned about once."""
import json
import logging
import shutil

import pytest
import requests
from support import refresh

from cloudtrail_es.backfill import cli
from cloudtrail_es.write.indexes import index_body

# The trail is a load here: the shared corpus adds nothing to what these tests check.
pytestmark = [pytest.mark.integration, pytest.mark.generated_trail_only]

#: A month of the corpus with many files and many distinct keys.
CORPUS_MONTH = ("2018", "04")


@pytest.fixture()
def month(trail_manifest):
    """(YYYY, MM): of the generated trail, its first month."""
    return CORPUS_MONTH if trail_manifest is None else tuple(
        next(iter(trail_manifest["events_by_month"])).split("-"))


@pytest.fixture()
def month_dir(corpus_dir, month, tmp_path):
    """The trail's files of one month (many files, many distinct keys)."""
    root = tmp_path / "logs"
    files = [p for p in (corpus_dir / "AWSLogs").rglob("*.json.gz")
             if p.parent.parent.name == month[1] and p.parent.parent.parent.name == month[0]]
    assert len(files) > 50
    for path in files:
        target = root / path.relative_to(corpus_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    return root


def test_events_degraded_by_the_field_limit_are_counted_and_warned_about_once(
        loader_env, opensearch_url, month, month_dir, tmp_path, capsys, caplog):
    index = f"{loader_env}-{month[0]}-{month[1]}"
    created = requests.put(f"{opensearch_url}/{index}", json=index_body(shards=1, replicas=0), timeout=60)
    assert created.status_code == 200, created.text
    # Our mapping takes what it takes; from now on no new field fits.
    limited = requests.put(f"{opensearch_url}/{index}/_settings", timeout=60,
                           json={"index.mapping.total_fields.limit": 1})
    assert limited.status_code == 200, limited.text
    caplog.set_level(logging.WARNING)

    exit_code = cli.main(["--dir", str(month_dir), "--json", "--workers", "4",
                          "--dead-letter-dir", str(tmp_path / "dl")])

    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert exit_code in (cli.EXIT_OK, cli.EXIT_DEAD_LETTERED), summary
    assert summary["files_failed"] == 0
    assert summary["events_read"] == summary["indexed"] + summary["degraded"] + summary["dead_lettered"]
    assert 0 < summary["degraded_field_limit"] <= summary["degraded"]
    assert summary["indexed"] > 0  # events bringing no new key still land in full
    refresh(opensearch_url, loader_env)
    count = requests.post(f"{opensearch_url}/{index}/_count", timeout=60, json={"query": {
        "prefix": {"degraded_reason": "illegal_argument_exception: Limit of total fields [1]"}}})
    assert count.json()["count"] == summary["degraded_field_limit"]
    warnings = [r for r in caplog.records if r.getMessage() == "field limit reached"]
    assert [(r.index, r.limit) for r in warnings] == [(index, 1)]
    assert "index.mapping.total_fields.limit" in warnings[0].advice
