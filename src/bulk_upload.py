"""Backfill CloudTrail files from S3: ``python src/bulk_upload.py BUCKET PREFIX``."""
import sys

from cloudtrail_es.backfill.cli import main

if __name__ == "__main__":
    sys.exit(main())
