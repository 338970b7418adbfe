"""``python -m cloudtrail_es.retention``: monthly indexes past their retention deleted.

Kept at its documented name; the command lives in ``cloudtrail_es.commands.retention``.
"""
import sys

from cloudtrail_es.commands.retention import main

if __name__ == "__main__":
    sys.exit(main())
