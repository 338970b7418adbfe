"""Copy src/cloudtrail_es/aws/rolemapping.py into cloudformation.yml as SetupFunction's inline code.

    python scripts/inline_rolemapping.py          # rewrite the template
    python scripts/inline_rolemapping.py --check  # exit 1 if the copy differs

The function must have its code when the stack is created, before `make deploy` uploads the
package, so the template carries the module verbatim between the BEGIN and END markers.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "cloudformation.yml"
MODULE = ROOT / "src" / "cloudtrail_es" / "aws" / "rolemapping.py"
BEGIN = "        # BEGIN inline copy of src/cloudtrail_es/aws/rolemapping.py"
END = "        # END inline copy of src/cloudtrail_es/aws/rolemapping.py"
INDENT = " " * 10


def inline_block(source: str) -> str:
    """The ZipFile literal block holding ``source``."""
    lines = [INDENT + line if line else "" for line in source.splitlines()]
    return "\n".join(["        ZipFile: |", *lines]) + "\n"


def with_module(template: str, source: str) -> str:
    start = template.index(BEGIN) + len(BEGIN) + 1
    end = template.index(END)
    return template[:start] + inline_block(source) + template[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the copy is current")
    args = parser.parse_args(argv)
    template = TEMPLATE.read_text(encoding="utf-8")
    updated = with_module(template, MODULE.read_text(encoding="utf-8"))
    if args.check:
        if updated != template:
            print("cloudformation.yml: SetupFunction's inline code differs from "
                  "src/cloudtrail_es/aws/rolemapping.py; run python scripts/inline_rolemapping.py",
                  file=sys.stderr)
            return 1
        return 0
    TEMPLATE.write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
