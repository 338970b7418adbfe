"""``python -m cloudtrail_es.redrive``: dead-lettered events sent again.

Kept at its documented name; the command lives in ``cloudtrail_es.commands.redrive``.
"""
import sys

from cloudtrail_es.commands.redrive import main

if __name__ == "__main__":
    sys.exit(main())
