"""Create the ``cloudtrail-*`` index pattern (time field ``eventTime``) in Dashboards or Kibana.

``python -m cloudtrail_es.commands.dashboards [--url URL] [--kibana]`` does through the saved
objects API what the original README asked users to do by hand. The same object is
in ``saved_objects.ndjson`` beside this module, for Saved objects > Import.
Authentication is the cluster's (``ES_AUTH``); the URL defaults to
``ES_HOSTNAME`` + ``/_dashboards`` (Amazon OpenSearch Service's layout), with ``--kibana``
ES_HOSTNAME's host on port 5601; ``--url`` alone suffices (no ES_HOSTNAME needed).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import Any, Sequence
from urllib.parse import urlsplit

from cloudtrail_es.write.cluster import create_cluster
from cloudtrail_es.core.config import Settings, base_url, split_credentials
from cloudtrail_es.core.errors import ClusterError, ClusterUnreachable, ConfigurationError
from cloudtrail_es.core.names import segment
from cloudtrail_es.core.redact import redact


def index_pattern(prefix: str) -> tuple[str, dict]:
    """The saved object's id and attributes for ``prefix-*``."""
    return f"{prefix}-index-pattern", {"title": f"{prefix}-*", "timeFieldName": "eventTime"}


#: Kibana's own port (its ``server.port`` default): ``--kibana`` without ``--url`` goes there.
KIBANA_PORT = 5601
NOT_DASHBOARDS = ("no {product} saved objects API answers at {url} ({why}); give the "
                  "{product} base URL with --url")


def create_index_pattern(cluster, prefix: str, kibana: bool = False) -> str:
    """The index pattern, created (or overwritten); ClusterError, plainly worded, when nothing
    that looks like Dashboards or Kibana answers (refused, 404, or an answer that is not JSON)."""
    object_id, attributes = index_pattern(prefix)
    xsrf = {"kbn-xsrf": "true"} if kibana else {"osd-xsrf": "true"}
    product = "Kibana" if kibana else "OpenSearch Dashboards"
    try:
        response = cluster.request(
            "POST", f"/api/saved_objects/index-pattern/{segment(object_id)}?overwrite=true",
            {"attributes": attributes}, headers=xsrf)
    except ClusterUnreachable as exc:
        raise ClusterError(NOT_DASHBOARDS.format(product=product, url=cluster.base_url,
                                                 why=str(exc.__cause__ or exc))) from None
    # OpenSearch or Elasticsearch itself answers 400 "no handler found for uri".
    if response.status_code in (404, 405) or not _is_json(response) or "no handler found" in response.text:
        why = f"HTTP {response.status_code}" + ("" if _is_json(response) else ", not JSON")
        raise ClusterError(NOT_DASHBOARDS.format(product=product, url=cluster.base_url, why=why))
    if response.status_code != 200:
        raise ClusterError(f"cannot create index pattern {attributes['title']}", response)
    return object_id


def _is_json(response: Any) -> bool:
    try:
        response.json()
    except ValueError:
        return False
    return True


def default_url(es_url: str, kibana: bool) -> str:
    """``ES_HOSTNAME/_dashboards`` (Amazon OpenSearch Service's layout); for Kibana, the same
    host on Kibana's port 5601."""
    if not kibana:
        return es_url + "/_dashboards"
    parts = urlsplit(es_url)
    return f"{parts.scheme}://{parts.hostname}:{KIBANA_PORT}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dashboards", description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="Dashboards / Kibana base URL (default: ES_HOSTNAME/_dashboards; "
                                      f"with --kibana, ES_HOSTNAME's host on port {KIBANA_PORT})")
    parser.add_argument("--kibana", action="store_true", help="talk to Kibana (kbn-xsrf header)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(es_url=base_url(args.url)) if args.url else Settings.from_env()
        url = args.url or default_url(settings.es_url, args.kibana)
        cluster = create_cluster(replace(settings, es_url=base_url(url)))
        object_id = create_index_pattern(cluster, settings.index_prefix, args.kibana)
    except (ConfigurationError, ClusterError) as exc:
        print(redact(f"dashboards: {exc}"), file=sys.stderr)
        return 2
    print(redact(json.dumps({"index_pattern": object_id, "url": split_credentials(url)[0]})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
