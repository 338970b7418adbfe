"""What names a CloudTrail log file: imported by every layer, importing nothing of ours."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ObjectRef:
    """A CloudTrail log file: S3 bucket and key, or a local root directory and relative path."""

    bucket: str
    key: str
    size: int = field(default=0, compare=False)
