"""What the S3 key of a CloudTrail log file tells: is it one, and which index it goes to."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

# ACCOUNT_CloudTrail_REGION_YYYYMMDDTHHMMZ_UNIQUE.json.gz, and Insights files
# ACCOUNT_CloudTrail-Insight_REGION_... (loaded into the same monthly index); digest files
# say "CloudTrail-Digest" and carry no events, so they never match.
_LOG_FILE_NAME = re.compile(
    r"(?P<account>[^/]+?)_CloudTrail(?:-Insight)?_(?P<region>[a-z0-9-]+)_"
    r"(?P<year>\d{4})(?P<month>\d{2})(?P<day>\d{2})T\d{4}Z_[A-Za-z0-9]+\.json(?:\.gz)?"
)


@dataclass(frozen=True)
class LogFileName:
    account: str
    region: str
    day: date


def parse_log_file_key(key: str) -> LogFileName | None:
    """The parts of a CloudTrail log (or Insights) file's name, or None if the key is not one."""
    if "/CloudTrail-Digest/" in key:
        return None
    match = _LOG_FILE_NAME.fullmatch(key.rsplit("/", 1)[-1])
    if match is None:
        return None
    try:
        day = date(int(match["year"]), int(match["month"]), int(match["day"]))
    except ValueError:
        return None
    return LogFileName(match["account"], match["region"], day)


def is_log_file_key(key: str) -> bool:
    return parse_log_file_key(key) is not None


def index_name_for(key: str, prefix: str = "cloudtrail") -> str:
    """``<prefix>-YYYY-MM`` from the datestamp in the file name."""
    name = parse_log_file_key(key)
    if name is None:
        raise ValueError(f"not a CloudTrail log file name: {key}")
    return f"{prefix}-{name.day:%Y-%m}"
