"""What the command-line tools share: exit codes, common options, settings, reporting."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cloudtrail_es.write.cluster import Cluster, create_cluster
from cloudtrail_es.core.config import LOG_LEVELS, Settings, log_level_from_env
from cloudtrail_es.write.engine import detect
from cloudtrail_es.core.logs import configure_logging
from cloudtrail_es.core.redact import redact, register_environment

EXIT_OK = 0
EXIT_FILES_FAILED = 1
EXIT_USAGE = 2
EXIT_DEAD_LETTERED = 3
EXIT_INTERRUPTED = 130


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dead-letter-dir", default=None,
                        help="where events the cluster will not take are written "
                             "(default: DEAD_LETTER_DIR or dead-letter)")
    add_retry_limit(parser)
    add_log_level(parser)


def add_retry_limit(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    parser.add_argument("--retry-limit", type=float, default=None, metavar="SECONDS",
                        help=help or "how long to keep retrying a throttled file "
                                     "(default: RETRY_LIMIT_SECONDS or 900)")


def log_level(value: str) -> str:
    """``--log-level`` in any case; argparse reports a wrong one as a usage error."""
    if value.strip().upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{value!r}: expected one of {', '.join(LOG_LEVELS)} (any case)")
    return value.strip().upper()


def add_log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default=None, type=log_level, metavar="LEVEL",
                        help="default: LOG_LEVEL or INFO (on a terminal: WARNING unless asked)")


def start_logging(args: argparse.Namespace, quiet: bool = False,
                  terminal: bool | None = None) -> None:
    """JSON logs at ``--log-level`` (else LOG_LEVEL); ConfigurationError for a bad level.

    On a terminal (stderr a tty) the progress bar and warnings are what a person reads: the
    per-file INFO lines come only at a level asked for explicitly, or go to ``--log-file``.
    Every command calls it first: the environment's secrets are registered before anything
    (a setting refused, say) can quote them.
    """
    register_environment()
    asked = args.log_level or log_level_from_env(default="")
    log_file = getattr(args, "log_file", None)
    if log_file:
        configure_logging(asked or "INFO", stream=open(log_file, "a", encoding="utf-8"))
        configure_logging("WARNING", replace=False)
        return
    if terminal is None:
        terminal = sys.stderr.isatty()
    configure_logging("WARNING" if quiet or (terminal and not asked) else asked or "INFO")


def settings_from(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {} if args.retry_limit is None else {
        "retry_limit_seconds": args.retry_limit}
    if getattr(args, "breaker_seconds", None) is not None:
        overrides["breaker_seconds"] = args.breaker_seconds
    return Settings.from_env(**overrides)


def connect(args: argparse.Namespace) -> tuple[Settings, Cluster]:
    """For commands without a processor: fails fast, with the reason, when the cluster
    cannot be reached or refuses us (``create_processor`` does the same check)."""
    settings = settings_from(args)
    cluster = create_cluster(settings)
    detect(cluster, settings.serverless, settings.client_ids)
    return settings, cluster


def fail_usage(program: str, error: Exception) -> int:
    print(redact(f"{program}: {error}"), file=sys.stderr)
    return EXIT_USAGE


def report(summary: dict[str, Any], as_json: bool) -> None:
    """A summary as one JSON line, or as indented ``name: value`` lines."""
    if as_json:
        print(redact(json.dumps(summary)))
        return
    lines = []
    for name, value in summary.items():
        if isinstance(value, list):
            if value:
                lines.append(f"{name}:")
                lines += [f"  {item if not isinstance(item, dict) else json.dumps(item)}" for item in value]
        elif isinstance(value, dict):
            lines.append(f"{name}:")
            lines += [f"  {key}: {count}" for key, count in value.items()]
        else:
            lines.append(f"{name}: {value}")
    print(redact("\n".join(lines)))
