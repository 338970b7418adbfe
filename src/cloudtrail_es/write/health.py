"""Before writing: is the index there, writable, and its cluster able to take writes?"""
from __future__ import annotations

import time
from typing import Callable

from cloudtrail_es.write.cluster import Cluster, request_retrying
from cloudtrail_es.core.errors import ClusterBlocked, ClusterError
from cloudtrail_es.core.names import segment
from cloudtrail_es.core.retry import Backoff

BLOCK_SETTINGS = ("read_only", "read_only_allow_delete", "write")


class WriteGate:
    """Checks an index's health and write blocks, at most once per ``ttl`` seconds.

    A red index, an index or cluster under a write block (read-only, disk flood
    stage) gives one clear error instead of a flood of rejected documents.
    """

    def __init__(self, cluster: Cluster, backoff: Backoff, ttl: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._cluster = cluster
        self._backoff = backoff
        self._ttl = ttl
        self._clock = clock
        self._checked: dict[str, float] = {}

    def check(self, index: str, deadline: float) -> None:
        if self._clock() - self._checked.get(index, float("-inf")) < self._ttl:
            return
        health = self._get(f"/_cluster/health/{segment(index)}", deadline)
        if health.get("status") == "red":
            raise ClusterError(f"index {index} is red: its primary shards are not all assigned")
        index_settings = self._get(f"/{segment(index)}/_settings?flat_settings=true", deadline)
        cluster_settings = self._get("/_cluster/settings?flat_settings=true", deadline)
        settings = {
            **cluster_settings.get("persistent", {}), **cluster_settings.get("transient", {}),
            **index_settings.get(index, {}).get("settings", {}),
        }
        blocks = sorted(
            name for name, value in settings.items()
            if str(value).lower() == "true" and name.rsplit(".", 1)[-1] in BLOCK_SETTINGS
            and ".blocks." in f".{name}"
        )
        if blocks:
            raise ClusterBlocked(f"writes to {index} are blocked by {', '.join(blocks)}")
        self._checked[index] = self._clock()

    def _get(self, path: str, deadline: float) -> dict:
        response = request_retrying(self._cluster, self._backoff, deadline, "GET", path)
        if response.status_code != 200:
            raise ClusterError(f"GET {path} failed", response)
        return response.json()
