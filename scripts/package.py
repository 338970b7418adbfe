"""Build the Lambda deployment zip.

    python scripts/package.py --output build/x.zip --python-version 3.12 \
        --platform manylinux2014_x86_64

The runtime dependencies come from pyproject.toml ([project].dependencies),
less the AWS SDK that the Lambda runtime already provides. They are installed
as wheels for the Lambda's platform and Python, next to the project's code,
and the result is written as a deterministic zip (sorted entries, fixed
timestamps and permissions).
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
CODE = ("lambda_function.py", "bulk_upload.py", "cloudtrail_es")
#: Sigma rules converted here (pySigma is a build-time tool) into the package's rule bundle.
RULES = ROOT / "rules"

# Provided by the Lambda Python runtime; dropped even when pulled in transitively.
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath")
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


class PackageError(Exception):
    """The package could not be built."""


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. as one hyphen."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise PackageError(f"cannot read a package name from {requirement!r}")
    return normalize(match.group(1))


def runtime_requirements(pyproject: Path) -> list[str]:
    """[project].dependencies without the packages the Lambda runtime has."""
    with pyproject.open("rb") as handle:
        dependencies = tomllib.load(handle).get("project", {}).get("dependencies", [])
    provided = {normalize(name) for name in RUNTIME_PROVIDED}
    return [req for req in dependencies if requirement_name(req) not in provided]


def pip_install(requirements: list[str], target: Path, python_version: str, platform: str) -> None:
    command = [
        sys.executable, "-m", "pip", "install", "--target", str(target),
        "--platform", platform, "--implementation", "cp",
        "--python-version", python_version, "--only-binary=:all:",
        "--no-compile", "--upgrade", *requirements,
    ]
    if subprocess.run(command).returncode != 0:
        raise PackageError(f"pip could not install {' '.join(requirements)} for "
                           f"Python {python_version} on {platform}")


def drop_runtime_provided(target: Path) -> None:
    """Remove the AWS SDK (and pip's bin/ scripts) if a dependency pulled them in."""
    provided = {normalize(name) for name in RUNTIME_PROVIDED}
    for entry in target.iterdir():
        name = entry.name.split("-")[0] if entry.name.endswith(".dist-info") else entry.name
        if normalize(name) in provided or entry.name == "bin":
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def check_code() -> None:
    missing = [f"src/{name}" for name in CODE if not (SRC / name).exists()]
    if missing:
        raise PackageError(f"missing {', '.join(missing)}")


def copy_code(target: Path) -> None:
    for name in CODE:
        source = SRC / name
        if source.is_dir():
            shutil.copytree(source, target / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, target / name)


def write_rule_bundle(target: Path) -> None:
    """The detector's packaged rules: ``rules/`` converted to Query DSL (cloudtrail_es.detections.sigma)."""
    import json

    sys.path.insert(0, str(SRC))
    try:
        from cloudtrail_es.detections import sigma
    except ImportError as exc:
        raise PackageError(f"converting rules/ needs pySigma (the dev extra): {exc}") from None
    conversion = sigma.convert_paths([RULES])
    for skipped in conversion.skipped:
        print(f"package.py: rule {skipped['id']} skipped: {skipped['reason']}", file=sys.stderr)
    target.write_text(json.dumps(conversion.bundle(), indent=1, sort_keys=True), encoding="utf-8")


def write_zip(tree: Path, output: Path) -> None:
    """Zip `tree` with sorted entries, a fixed timestamp and mode 0644."""
    output.parent.mkdir(parents=True, exist_ok=True)
    files = sorted(path for path in tree.rglob("*") if path.is_file())
    with zipfile.ZipFile(output, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            info = zipfile.ZipInfo(path.relative_to(tree).as_posix(), ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o100644 << 16
            info.create_system = 3  # Unix, so that the mode is honoured
            archive.writestr(info, path.read_bytes())


def build(output: Path, python_version: str, platform: str) -> None:
    check_code()
    with tempfile.TemporaryDirectory(prefix="lambda-package-") as tmp:
        tree = Path(tmp)
        requirements = runtime_requirements(ROOT / "pyproject.toml")
        if requirements:
            pip_install(requirements, tree, python_version, platform)
            drop_runtime_provided(tree)
        copy_code(tree)
        write_rule_bundle(tree / "cloudtrail_es" / "detections" / "rules.json")
        write_zip(tree, output)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True, help="zip file to write")
    parser.add_argument("--python-version", default="3.12", help="Lambda runtime's Python")
    parser.add_argument("--platform", default="manylinux2014_x86_64", help="wheel platform tag")
    args = parser.parse_args(argv)
    try:
        build(args.output.resolve(), args.python_version, args.platform)
    except (PackageError, OSError) as exc:
        print(f"package.py: error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.output} {args.output.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
