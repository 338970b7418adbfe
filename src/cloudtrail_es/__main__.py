import sys

from cloudtrail_es.backfill.cli import main

sys.exit(main())
