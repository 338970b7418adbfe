"""Which engine answers, detected once per process, and everything that differs by engine.

| engine | what changes |
|---|---|
| Elasticsearch 6.x | mapping type ``_doc`` in index creation and in every bulk action |
| Elasticsearch 7+, OpenSearch 1-3 | typeless |
| Elasticsearch 8+ minimal builds | ``GET /`` may answer 405: the version comes from ``_nodes`` |
| OpenSearch Serverless | no ``GET /``: recognised by host (``*.aoss.amazonaws.com``) or ``ES_SERVICE=aoss``; SigV4 service ``aoss``; index settings left to the service (only mappings sent); no cluster health or settings API (the write gate is skipped); request bodies not compressed; a time-series collection refuses client ``_id``s (``AOSS_COLLECTION=timeseries``) |

Every engine accepts gzip request bodies except where noted.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from cloudtrail_es.write.cluster import Cluster
from cloudtrail_es.core.errors import ClusterError, ClusterUnreachable

log = logging.getLogger(__name__)

DOC_TYPE = "_doc"


@dataclass(frozen=True)
class Engine:
    distribution: str  # "opensearch", "elasticsearch" or "serverless"
    version: tuple[int, ...] = ()
    accepts_ids: bool = True

    @property
    def serverless(self) -> bool:
        return self.distribution == "serverless"

    @property
    def doc_type(self) -> str | None:
        """The mapping type bulk actions and index bodies must name (Elasticsearch 5-6)."""
        typed = self.distribution == "elasticsearch" and self.version and self.version[0] < 7
        return DOC_TYPE if typed else None

    @property
    def supports_compression(self) -> bool:
        return not self.serverless

    def index_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """Our index body as this engine takes it."""
        if self.serverless:
            return {"mappings": body["mappings"]}
        if self.doc_type:
            return {**body, "mappings": {self.doc_type: body["mappings"]}}
        return body

    def __str__(self) -> str:
        return f"{self.distribution} {'.'.join(map(str, self.version))}".strip()


def detect(cluster: Cluster, serverless: bool = False, accepts_ids: bool = True) -> Engine:
    """Ask the cluster what it is (``GET /``, else ``_nodes``); raises if it does not answer."""
    if serverless:
        return Engine("serverless", accepts_ids=accepts_ids)
    response = cluster.request("GET", "/")
    if response.status_code == 200:
        version = response.json().get("version", {})
        distribution = version.get("distribution", "elasticsearch")
        return Engine(distribution, _numbers(version.get("number", "")))
    _refuse_if_unauthorised(response)
    # URL-encoded already: SigV4 signs the query as sent, and AWS checks it encoded.
    nodes = cluster.request("GET", "/_nodes/_local?filter_path=nodes.%2A.version")
    _refuse_if_unauthorised(nodes)
    if nodes.status_code != 200:
        raise ClusterError(f"cluster at {cluster.base_url} does not say what it is", response)
    versions = [node.get("version", "") for node in nodes.json().get("nodes", {}).values()]
    return Engine("elasticsearch", _numbers(versions[0] if versions else ""))


def _refuse_if_unauthorised(response: Any) -> None:
    if response.status_code in (401, 403):
        raise ClusterError("the cluster refused our credentials (check ES_AUTH and its "
                           "settings, or the role mapping of the domain)", response)


def _numbers(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split("-")[0].split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


__all__ = ["Engine", "detect", "ClusterUnreachable"]
