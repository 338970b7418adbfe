"""Copy each module a template inlines (its custom resources' code) between its markers.

    python scripts/inline_rolemapping.py          # rewrite the templates
    python scripts/inline_rolemapping.py --check  # exit 1 if a copy differs

A function serving a custom resource must have its code when the stack is created, before
`make deploy` uploads the package, so the templates carry the modules verbatim as inline
``ZipFile`` code, between a pair of lines

    # BEGIN inline copy of src/cloudtrail_es/aws/<module>.py
    # END inline copy of src/cloudtrail_es/aws/<module>.py

(SetupFunction: ``rolemapping.py``; NotificationFunction: ``bucketnotification.py``). The code
is indented two spaces deeper than its markers.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = (ROOT / "cloudformation.yml", ROOT / "cloudformation-trail-bucket.yml")
MARKER = re.compile(r"^(?P<indent> *)# BEGIN inline copy of (?P<path>\S+\.py)\n", re.MULTILINE)


def inline_block(source: str, indent: str) -> str:
    """The ZipFile literal block holding ``source``, its key at ``indent``."""
    lines = [indent + "  " + line if line else "" for line in source.splitlines()]
    return "\n".join([f"{indent}ZipFile: |", *lines]) + "\n"


def inlined(template: str, root: Path = ROOT) -> str:
    """``template`` with every marked block replaced by the current text of its module."""
    out, position = [], 0
    for begin in MARKER.finditer(template):
        if begin.start() < position:
            continue
        indent, path = begin["indent"], begin["path"]
        end_line = f"{indent}# END inline copy of {path}\n"
        end = template.index(end_line, begin.end())
        source = (root / path).read_text(encoding="utf-8")
        out += [template[position:begin.end()], inline_block(source, indent)]
        position = end
    return "".join(out) + template[position:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the copies are current")
    args = parser.parse_args(argv)
    stale = []
    for path in TEMPLATES:
        template = path.read_text(encoding="utf-8")
        updated = inlined(template)
        if updated == template:
            continue
        stale.append(path.name)
        if not args.check:
            path.write_text(updated, encoding="utf-8")
    if args.check and stale:
        print(f"{', '.join(stale)}: inline code differs from its module; "
              "run python scripts/inline_rolemapping.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
