"""The Lambda package: built by both Makefiles, importable on a bare Lambda runtime."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_PROVIDED = ("boto3/", "botocore/", "s3transfer/", "jmespath/")


def make_env() -> dict[str, str]:
    """This environment, minus what an outer `make test` or activated venv would leak in."""
    leaked = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "VIRTUAL_ENV")
    return {key: value for key, value in os.environ.items() if key not in leaked}


def run_make(*args: str, cwd: Path = ROOT, timeout: float = 900) -> None:
    if shutil.which("make") is None:
        pytest.fail("`make` is not on PATH", pytrace=False)
    result = subprocess.run(["make", *args], cwd=cwd, env=make_env(), capture_output=True,
                            text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(f"make {' '.join(args)} (in {cwd}) exited {result.returncode}:\n"
                    f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}", pytrace=False)


def venv_override() -> list[str]:
    """VENV=<the venv running these tests>, so make reuses it instead of making another."""
    return [f"VENV={sys.prefix}"] if sys.prefix != sys.base_prefix else []


def lambda_handler_name() -> str:
    """`Handler` of the loader's AWS::Lambda::Function in cloudformation.yml."""
    return template_function("LambdaFunction")["Handler"]


def template_function(name: str) -> dict:
    """Properties of the AWS::Lambda::Function ``name`` in cloudformation.yml."""
    try:
        import yaml
    except ImportError:
        pytest.fail("PyYAML is missing: run `make -f Makefile.pip init`", pytrace=False)

    class CfnLoader(yaml.SafeLoader):
        """SafeLoader that turns `!Ref x`, `!GetAtt a.b`, ... into {"!Ref": "x"}."""

    def tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict:
        if isinstance(node, yaml.ScalarNode):
            return {f"!{suffix}": loader.construct_scalar(node)}
        if isinstance(node, yaml.SequenceNode):
            return {f"!{suffix}": loader.construct_sequence(node, deep=True)}
        return {f"!{suffix}": loader.construct_mapping(node, deep=True)}

    CfnLoader.add_multi_constructor("!", tagged)
    template = yaml.load((ROOT / "cloudformation.yml").read_text(), Loader=CfnLoader)
    resource = template["Resources"][name]
    assert resource["Type"] == "AWS::Lambda::Function", name
    return resource["Properties"]


@pytest.fixture(scope="module")
def pip_zip(tmp_path_factory) -> Path:
    artifact = tmp_path_factory.mktemp("pip") / "a.zip"
    run_make("-f", "Makefile.pip", "package", f"ARTIFACT={artifact}", *venv_override())
    return artifact


@pytest.fixture(scope="module")
def lambda_runtime(tmp_path_factory) -> Path:
    """What the Lambda Python runtime adds to the function's code: the AWS SDK only."""
    target = tmp_path_factory.mktemp("runtime")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target), "boto3"],
        capture_output=True, text=True, timeout=600,
    )
    if result.returncode != 0:
        pytest.fail(f"pip could not install boto3 for the runtime emulation:\n{result.stderr}",
                    pytrace=False)
    return target


def test_pip_package_has_the_code_and_no_aws_sdk(pip_zip):
    names = zipfile.ZipFile(pip_zip).namelist()

    assert not [name for name in names if name.startswith(RUNTIME_PROVIDED)]
    for name in ("lambda_function.py", "bulk_upload.py", "cloudtrail_es/__init__.py"):
        assert name in names
    for package in ("requests/", "aws_requests_auth/"):
        assert any(name.startswith(package) for name in names), package
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


# Run in a clean interpreter (-I: no environment, no cwd; -S: no site-packages);
# argv: code dir, runtime dir, handler module, handler attribute.
IMPORT_HANDLER = """
import importlib, sys
code, runtime, module, attribute = sys.argv[1:]
sys.path[:0] = [code, runtime]
assert not [p for p in sys.path if "-packages" in p], sys.path
handler = getattr(importlib.import_module(module), attribute)
assert callable(handler), f"{module}.{attribute} is not callable: {handler!r}"
import charset_normalizer, requests, aws_requests_auth, boto3
for name, home in ((module, code), ("requests", code), ("boto3", runtime)):
    where = sys.modules[name].__file__
    assert where.startswith(home), f"{name} was imported from {where}, not {home}"
"""


def test_handler_named_by_template_imports_on_bare_runtime(pip_zip, lambda_runtime, tmp_path):
    # The zip is built for the real runtime, Python 3.12, while this interpreter
    # may be older (3.11 here). That is still a fair test: the only compiled
    # dependency, charset_normalizer, ships its pure-Python modules beside the
    # cp312 extensions, and an interpreter ignores extension modules tagged for
    # another ABI, so the import below falls back to them rather than failing.
    code = tmp_path / "task"
    code.mkdir()
    zipfile.ZipFile(pip_zip).extractall(code)
    module, attribute = lambda_handler_name().rsplit(".", 1)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LAMBDA_TASK_ROOT": str(code),
           "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}

    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", IMPORT_HANDLER, str(code), str(lambda_runtime),
         module, attribute],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )

    assert result.returncode == 0, result.stderr


INLINE_HANDLER = """
import importlib, sys
code, runtime, module, attribute = sys.argv[1:]
sys.path[:0] = [code, runtime]
assert not [p for p in sys.path if "-packages" in p], sys.path
handler = getattr(importlib.import_module(module), attribute)
assert callable(handler), f"{module}.{attribute} is not callable: {handler!r}"
"""


def test_setup_function_inline_code_imports_on_bare_runtime(lambda_runtime, tmp_path):
    """CloudFormation stores inline code as index.py: the handler must import from it alone."""
    setup = template_function("SetupFunction")
    code = tmp_path / "task"
    code.mkdir()
    (code / "index.py").write_text(setup["Code"]["ZipFile"], encoding="utf-8")
    module, attribute = setup["Handler"].rsplit(".", 1)
    assert module == "index"
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", INLINE_HANDLER, str(code), str(lambda_runtime), module,
         attribute],
        cwd=tmp_path, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, capture_output=True,
        text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr


def copy_repo(destination: Path) -> None:
    """The files git would see: tracked plus untracked-but-not-ignored."""
    listing = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for name in filter(None, listing):
        source = ROOT / name
        if source.is_file():  # a tracked file may be deleted in the work tree
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


def use_simple_index(pyproject: Path) -> None:
    """Make Poetry resolve through the simple index that pip uses.

    On these machines Poetry's default PyPI source fails on the per-version JSON
    endpoint while the simple index works, so only this copy of pyproject.toml
    names it; the real one stays standard.
    """
    from pip._internal.models.index import PyPI

    with pyproject.open("a") as handle:
        handle.write('\n[[tool.poetry.source]]\nname = "pypi-simple"\n'
                     f'url = "{PyPI.simple_url}"\npriority = "primary"\n')
    tomllib.loads(pyproject.read_text())  # still valid TOML


def test_poetry_package_matches_pip_package(pip_zip, tmp_path):
    if shutil.which("git") is None:
        pytest.fail("`git` is not on PATH (needed to copy the repo)", pytrace=False)
    repo = tmp_path / "repo"
    copy_repo(repo)
    use_simple_index(repo / "pyproject.toml")
    artifact = tmp_path / "p.zip"

    run_make("-f", "Makefile.poetry", "package", f"ARTIFACT={artifact}", cwd=repo)

    assert sorted(zipfile.ZipFile(artifact).namelist()) == sorted(
        zipfile.ZipFile(pip_zip).namelist())


# The detector's runtime: the packaged rule bundle, read without pySigma.
LOAD_BUNDLE = """
import sys
code = sys.argv[1]
sys.path[:0] = [code]
from cloudtrail_es.detections import detect
rules = detect.load_rules([detect.PACKAGED_RULES])
assert "sigma" not in sys.modules, "pySigma imported at run time"
print(len(rules.rules), len(rules.skipped))
"""


def test_package_carries_the_converted_rules_usable_without_pysigma(pip_zip, tmp_path):
    names = zipfile.ZipFile(pip_zip).namelist()
    assert "cloudtrail_es/detections/rules.json" in names
    assert not [name for name in names if name.startswith("sigma/")]
    code = tmp_path / "task"
    zipfile.ZipFile(pip_zip).extractall(code)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}

    result = subprocess.run([sys.executable, "-I", "-S", "-c", LOAD_BUNDLE, str(code)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    rules_count = len(list((ROOT / "rules").glob("*.yml")))
    assert result.stdout.split() == [str(rules_count), "0"]
