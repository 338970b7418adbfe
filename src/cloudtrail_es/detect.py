"""``python -m cloudtrail_es.detect``: Sigma rules over the loaded events.

Kept at its documented name; the command lives in ``cloudtrail_es.detections.detect``.
"""
import sys

from cloudtrail_es.detections.detect import main

if __name__ == "__main__":
    sys.exit(main())
