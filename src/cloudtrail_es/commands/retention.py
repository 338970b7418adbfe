"""Delete monthly indexes past their retention; never the current month's.

``python -m cloudtrail_es.commands.retention --months N [--dry-run]``, or the Lambda's
scheduled event with ``RETENTION_MONTHS`` set. With ``--install-policy`` it
installs the engine's own lifecycle policy instead (OpenSearch ISM), which
deletes by index *creation* age: fine for live loading, not for backfilled
history, whose old months are created today.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from datetime import date, datetime, timezone
from typing import Any, Iterable, Sequence

from cloudtrail_es.write.cluster import Cluster
from cloudtrail_es.commands.common import EXIT_OK, add_log_level, connect, fail_usage, start_logging
from cloudtrail_es.core.config import retention_months_from_env
from cloudtrail_es.core.errors import ClusterError, ConfigurationError
from cloudtrail_es.core.names import segment

log = logging.getLogger(__name__)


def month_index(date_of: date) -> int:
    return date_of.year * 12 + date_of.month - 1


def expired_indexes(names: Iterable[str], prefix: str, months: int, today: date) -> list[str]:
    """The ``prefix-YYYY-MM`` indexes more than ``months`` months before ``today``'s month.

    ``months`` = 3 in November keeps September to November (and any later month).
    Other names are left alone.
    """
    if months < 1:
        raise ConfigurationError("retention must keep at least 1 month (the current one)")
    pattern = re.compile(re.escape(prefix) + r"-(\d{4})-(\d{2})")
    oldest_kept = month_index(today) - (months - 1)
    expired = []
    for name in names:
        match = pattern.fullmatch(name)
        if match and 1 <= int(match[2]) <= 12:
            if int(match[1]) * 12 + int(match[2]) - 1 < oldest_kept:
                expired.append(name)
    return sorted(expired)


def apply_retention(cluster: Cluster, prefix: str, months: int, today: date | None = None,
                    dry_run: bool = False) -> list[str]:
    """Delete (or, dry, list) the expired monthly indexes; returns their names."""
    today = today or datetime.now(timezone.utc).date()
    response = cluster.request("GET", f"/_cat/indices/{segment(prefix)}-*?format=json&h=index")
    if response.status_code != 200:
        raise ClusterError(f"cannot list the {prefix}-* indexes", response)
    expired = expired_indexes((row["index"] for row in response.json()), prefix, months, today)
    for index in expired:
        if dry_run:
            log.info("would delete expired index", extra={"index": index, "months": months})
            continue
        deleted = cluster.request("DELETE", f"/{segment(index)}")
        if deleted.status_code not in (200, 404):
            raise ClusterError(f"cannot delete {index}", deleted)
        log.info("deleted expired index", extra={"index": index, "months": months})
    return expired


def ism_policy(prefix: str, months: int) -> dict[str, Any]:
    """An OpenSearch ISM policy deleting ``prefix-*`` indexes ``months`` x 31 days after creation."""
    return {"policy": {
        "description": f"cloudtrail-to-elasticsearch: delete {prefix}-* after {months} months",
        "default_state": "live",
        "states": [
            {"name": "live", "actions": [],
             "transitions": [{"state_name": "delete", "conditions": {"min_index_age": f"{months * 31}d"}}]},
            {"name": "delete", "actions": [{"delete": {}}], "transitions": []},
        ],
        "ism_template": [{"index_patterns": [f"{prefix}-*"], "priority": 100}],
    }}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="retention", description=__doc__.splitlines()[0])
    parser.add_argument("--months", type=int, default=None,
                        help="months to keep, the current one included (default RETENTION_MONTHS)")
    parser.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    parser.add_argument("--install-policy", action="store_true",
                        help="install an OpenSearch ISM policy instead of deleting now")
    parser.add_argument("--retry-limit", type=float, default=None, help=argparse.SUPPRESS)
    add_log_level(parser)
    args = parser.parse_args(argv)
    try:
        start_logging(args)
        months = retention_months_from_env() if args.months is None else args.months
        settings, cluster = connect(args)
        if args.install_policy:
            name = f"{settings.index_prefix}-retention"
            response = cluster.request("PUT", f"/_plugins/_ism/policies/{segment(name)}",
                                       ism_policy(settings.index_prefix, months))
            if response.status_code not in (200, 201):
                raise ClusterError(f"cannot install ISM policy {name}", response)
            print(json.dumps({"installed": name}))
            return EXIT_OK
        expired = apply_retention(cluster, settings.index_prefix, months, dry_run=args.dry_run)
    except (ConfigurationError, ClusterError) as exc:
        return fail_usage("retention", exc)
    print(json.dumps({"dry_run" if args.dry_run else "deleted": expired}))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
