"""Create the ``cloudtrail-*`` index pattern (time field ``eventTime``) in Dashboards or Kibana.

``python -m cloudtrail_es.dashboards [--url URL] [--kibana]`` does through the saved
objects API what the original README asked users to do by hand. The same object is
in ``saved_objects.ndjson`` beside this module, for Saved objects > Import.
Authentication is the cluster's (``ES_AUTH``); the URL defaults to
``ES_HOSTNAME`` + ``/_dashboards`` (Amazon OpenSearch Service's layout).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from .cluster import create_cluster
from .config import Settings, split_credentials
from .errors import ClusterError, ConfigurationError
from .names import segment
from .redact import redact


def index_pattern(prefix: str) -> tuple[str, dict]:
    """The saved object's id and attributes for ``prefix-*``."""
    return f"{prefix}-index-pattern", {"title": f"{prefix}-*", "timeFieldName": "eventTime"}


def create_index_pattern(cluster, prefix: str, kibana: bool = False) -> str:
    object_id, attributes = index_pattern(prefix)
    xsrf = {"kbn-xsrf": "true"} if kibana else {"osd-xsrf": "true"}
    response = cluster.request(
        "POST", f"/api/saved_objects/index-pattern/{segment(object_id)}?overwrite=true",
        {"attributes": attributes}, headers=xsrf)
    if response.status_code != 200:
        raise ClusterError(f"cannot create index pattern {attributes['title']}", response)
    return object_id


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dashboards", description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="Dashboards / Kibana base URL (default: ES_HOSTNAME/_dashboards)")
    parser.add_argument("--kibana", action="store_true", help="talk to Kibana (kbn-xsrf header)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        url = args.url or settings.es_url + ("" if args.kibana else "/_dashboards")
        cluster = create_cluster(Settings.from_env(es_url=url))
        object_id = create_index_pattern(cluster, settings.index_prefix, args.kibana)
    except (ConfigurationError, ClusterError) as exc:
        print(redact(f"dashboards: {exc}"), file=sys.stderr)
        return 2
    print(redact(json.dumps({"index_pattern": object_id, "url": split_credentials(url)[0]})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
