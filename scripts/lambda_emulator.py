"""Run the Lambda package as Lambda runs it: the Runtime Interface Emulator driving awslambdaric.

    python scripts/lambda_emulator.py install        # aws-lambda-rie (go install) into build/lambda-tools
    python scripts/lambda_emulator.py package DIR    # build the zip for this machine, unzip it in DIR

``aws-lambda-rie`` (github.com/aws/aws-lambda-runtime-interface-emulator, built from the Go module
proxy at the pinned RIE_VERSION) serves the Lambda Runtime API and the invoke endpoint
``POST /2015-03-31/functions/function/invocations``; it starts ``python -m awslambdaric <handler>``
(awslambdaric: the dev extra), which polls that API and calls the handler, as on AWS. The Python
process sees only what Lambda's would: the unzipped package (LAMBDA_TASK_ROOT, first on the path)
and a "runtime" directory that links the AWS SDK and awslambdaric from this virtualenv (``-S``:
no site-packages), so a dependency missing from the zip fails here as it would there.

The package is built by scripts/package.py as `make package` builds it, but for this machine's
Python (the Lambda's 3.12 wheels do not import on 3.11).

Used by tests/integration/test_lambda_runtime.py and benchmarks/bench_lambda.py; `make init` runs
``install``.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
RIE_MODULE = "github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie"
#: The emulator's tags (v1.x) are not semantic versions, so the proxy knows it by commit: this is
#: the latest release's (2026-10-30).
RIE_VERSION = os.environ.get("RIE_VERSION", "v0.0.0-20261030222936-bef5c4ba774d")
TOOLS = Path(os.environ.get("LAMBDA_TOOLS_DIR", ROOT / "build" / "lambda-tools"))
#: What the Lambda Python runtime has besides the function's code.
RUNTIME_DISTRIBUTIONS = ("awslambdaric", "boto3")
INVOKE_PATH = "/2015-03-31/functions/function/invocations"
REPORT = re.compile(r"REPORT RequestId: (?P<id>\S+)\s+(?:Init Duration: [\d.]+ ms\s+)?"
                    r"Duration: (?P<duration>[\d.]+) ms")
#: The init phase as the emulator's core timed it: the runtime's start and the handler's import,
#: until its first call for work (the REPORT line's "Init Duration" does not include that here).
INIT_REPORT = re.compile(r"INIT REPORT\(durationMs: (?P<init>[\d.]+)\)")


class EmulatorError(Exception):
    """The emulator or its tools could not be installed, started or reached."""


# -- tools -------------------------------------------------------------------------------------

def rie_path() -> Path:
    return Path(os.environ.get("AWS_LAMBDA_RIE") or TOOLS / "bin" / "aws-lambda-rie")


def install_rie() -> Path:
    """``go install`` the emulator (once) into TOOLS/bin; its path."""
    target = rie_path()
    stamp = target.with_name(target.name + ".version")
    if target.exists() and (stamp.exists() and stamp.read_text() == RIE_VERSION
                            or "AWS_LAMBDA_RIE" in os.environ):
        return target
    go = shutil.which("go")
    if go is None:
        raise EmulatorError("`go` is not on PATH: it builds aws-lambda-rie (https://go.dev/dl/)")
    target.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOBIN": str(target.parent), "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    done = subprocess.run([go, "install", f"{RIE_MODULE}@{RIE_VERSION}"], env=env, capture_output=True,
                          text=True, timeout=900)
    if done.returncode != 0 or not target.exists():
        raise EmulatorError(f"go install {RIE_MODULE}@{RIE_VERSION} failed:\n{done.stderr[-3000:]}")
    stamp.write_text(RIE_VERSION)
    return target


def _closure(names: tuple[str, ...]) -> list[importlib.metadata.Distribution]:
    """The installed distributions ``names`` and what they require (markers evaluated, no extras)."""
    seen: dict[str, importlib.metadata.Distribution] = {}
    pending = list(names)
    while pending:
        name = pending.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        try:
            seen[key] = distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise EmulatorError(f"{name} is not installed: run `make -f Makefile.pip init`") from None
        for text in distribution.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return list(seen.values())


def runtime_dir(target: Path | None = None) -> Path:
    """A directory linking what the Lambda runtime provides (awslambdaric, the AWS SDK) from this
    virtualenv, to put after the function's code on the path."""
    target = target or TOOLS / f"runtime-py{sys.version_info.major}{sys.version_info.minor}"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for distribution in _closure(RUNTIME_DISTRIBUTIONS):
        tops = {Path(str(path)).parts[0] for path in distribution.files or []}
        for top in sorted(tops):
            source = Path(str(distribution.locate_file(top)))
            if top in ("..", "bin", "__pycache__") or not source.exists() or (target / top).exists():
                continue
            (target / top).symlink_to(source)
    return target


def build_package(directory: Path) -> tuple[Path, Path]:
    """scripts/package.py's zip for this machine's Python, and the directory it is unzipped in."""
    directory.mkdir(parents=True, exist_ok=True)
    artifact = directory / "function.zip"
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    machine = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}[
        platform.machine().lower()]
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "package.py"), "--output", str(artifact),
                           "--python-version", python, "--platform", f"manylinux2014_{machine}"],
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise EmulatorError(f"scripts/package.py failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    task = directory / "task"
    if task.exists():
        shutil.rmtree(task)
    with zipfile.ZipFile(artifact) as archive:
        archive.extractall(task)
    return artifact, task


# -- the emulator ------------------------------------------------------------------------------

@dataclass
class Invocation:
    """One invoke: the HTTP status, the function's answer and the emulator's REPORT line."""

    status: int
    payload: Any
    request_id: str
    duration_ms: float | None = None

    @property
    def timed_out(self) -> bool:
        """Cut by the function's timeout (the emulator answers with text, not the runtime's JSON)."""
        return isinstance(self.payload, str) and self.payload.startswith("Task timed out")

    @property
    def error(self) -> str | None:
        """The errorType of a failed invocation (a raised exception, a timeout), else None."""
        if isinstance(self.payload, dict) and "errorType" in self.payload:
            return str(self.payload["errorType"])
        return None


@dataclass
class Emulator:
    """aws-lambda-rie serving ``handler`` of ``task`` on 127.0.0.1:``port``, started on enter."""

    task: Path
    handler: str
    environment: dict[str, str] = field(default_factory=dict)
    port: int = int(os.environ.get("LAMBDA_RIE_PORT", "8080"))
    timeout_seconds: int = 300
    memory_mb: int = 512
    runtime: Path | None = None
    log_path: Path | None = None
    _process: subprocess.Popen | None = None

    def __enter__(self) -> "Emulator":
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def start(self) -> None:
        runtime = self.runtime or runtime_dir()
        self.log_path = self.log_path or self.task.parent / f"rie-{self.port}.log"
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               "PYTHONPATH": f"{self.task}{os.pathsep}{runtime}", "LAMBDA_TASK_ROOT": str(self.task),
               "AWS_LAMBDA_FUNCTION_TIMEOUT": str(self.timeout_seconds),
               "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_mb),
               "AWS_LAMBDA_FUNCTION_NAME": "cloudtrail-to-elasticsearch", **self.environment}
        command = [str(rie_path()), "--runtime-interface-emulator-address", f"127.0.0.1:{self.port}",
                   sys.executable, "-S", "-m", "awslambdaric", self.handler]
        if _port_open(self.port):
            raise EmulatorError(f"port {self.port} is taken (LAMBDA_RIE_PORT chooses another)")
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(command, cwd=self.task, env=env, stdout=log,
                                             stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not _port_open(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise EmulatorError(f"aws-lambda-rie did not start:\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        self._process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def invoke(self, event: Any) -> Invocation:
        """POST ``event`` to the invoke endpoint; wait for the answer and its REPORT line."""
        request_id = str(uuid.uuid4())
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{INVOKE_PATH}", method="POST",
                                         data=json.dumps(event).encode(),
                                         headers={"X-Amzn-RequestId": request_id})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds + 60) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            payload = body.decode(errors="replace")
        invocation = Invocation(status, payload, request_id)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the REPORT line follows the answer
            report = next((m for m in REPORT.finditer(self.log()) if m["id"] == request_id), None)
            if report:
                invocation.duration_ms = float(report["duration"])
                break
            time.sleep(0.05)
        return invocation

    def init_durations_ms(self) -> list[float]:
        """Each init phase so far (a cold start; another after a timeout restarts the runtime)."""
        return [float(match["init"]) for match in INIT_REPORT.finditer(self.log())]

    def runtime_pids(self) -> list[int]:
        """The Python runtime's process(es) under the emulator."""
        if self._process is None:
            return []
        children = []
        for task in Path(f"/proc/{self._process.pid}/task").iterdir():
            children += (task / "children").read_text().split()
        return [int(pid) for pid in children]

    def peak_memory_mb(self) -> float:
        """The runtime's peak resident memory (VmHWM) so far; what Lambda reports as Max Memory Used
        (the emulator's own REPORT only repeats the memory size)."""
        peak = 0
        for pid in self.runtime_pids():
            status = Path(f"/proc/{pid}/status").read_text()
            match = re.search(r"VmHWM:\s+(\d+) kB", status)
            peak = max(peak, int(match.group(1)) if match else 0)
        return peak / 1024


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("install", help="go install aws-lambda-rie; check awslambdaric is installed")
    package = commands.add_parser("package", help="build the zip for this machine and unzip it")
    package.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            print(install_rie())
            _closure(RUNTIME_DISTRIBUTIONS)
        else:
            artifact, task = build_package(args.directory)
            print(f"{artifact} -> {task}")
    except EmulatorError as exc:
        print(f"lambda_emulator.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
