"""``python -m cloudtrail_es.dashboards``: the Dashboards / Kibana index pattern.

Kept at its documented name; the command lives in ``cloudtrail_es.commands.dashboards``.
"""
import sys

from cloudtrail_es.commands.dashboards import main

if __name__ == "__main__":
    sys.exit(main())
