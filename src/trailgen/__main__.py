"""``python -m trailgen OUTPUT_DIR``: write a generated trail and its manifest."""
from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from typing import Sequence

from trailgen.files import MANIFEST_NAME, TrailOptions, generate

DEFAULTS = TrailOptions()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trailgen", description=__doc__.splitlines()[0].strip("`"),
        epilog=f"The manifest ({MANIFEST_NAME}) lists what was written and every planted event "
               "with the starter rule that must find it.")
    parser.add_argument("output", help="directory to write into (AWSLogs/... and the manifest)")
    parser.add_argument("--events", type=int, default=DEFAULTS.events,
                        help=f"events in the trail, the intrusion included (default {DEFAULTS.events})")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="same seed, same trail")
    parser.add_argument("--start", type=date.fromisoformat, default=DEFAULTS.start,
                        help=f"first day, YYYY-MM-DD (default {DEFAULTS.start})")
    parser.add_argument("--days", type=int, default=DEFAULTS.days, help=f"default {DEFAULTS.days}")
    parser.add_argument("--accounts", type=int, default=DEFAULTS.accounts,
                        help=f"accounts in the organisation, 1..6 (default {DEFAULTS.accounts})")
    parser.add_argument("--regions", default=",".join(DEFAULTS.regions),
                        help="comma-separated (default %(default)s)")
    parser.add_argument("--broken-every", type=int, default=DEFAULTS.broken_every,
                        help="one broken file after every N files, 0 for none (default %(default)s)")
    parser.add_argument("--no-digests", dest="digests", action="store_false",
                        help="no CloudTrail-Digest files")
    parser.add_argument("--delivery-minutes", type=int, default=DEFAULTS.delivery_minutes,
                        help="a file per account and region this often; CloudTrail: about 5 "
                        "(default %(default)s: fewer, fuller files)")
    args = parser.parse_args(argv)
    try:
        options = TrailOptions(events=args.events, seed=args.seed, start=args.start, days=args.days,
                               accounts=args.accounts, regions=tuple(args.regions.split(",")),
                               broken_every=args.broken_every, digests=args.digests,
                               delivery_minutes=args.delivery_minutes)
    except ValueError as exc:
        parser.error(str(exc))
    began = time.monotonic()
    manifest = generate(args.output, options)
    print(f"{manifest['events']} events in {manifest['files']} files "
          f"({manifest['insights_files']} Insights), {manifest['digest_files']} digest files, "
          f"{len(manifest['broken_files'])} broken; {len(manifest['intrusion']['events'])} planted "
          f"events; {args.output}/{MANIFEST_NAME} ({time.monotonic() - began:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
