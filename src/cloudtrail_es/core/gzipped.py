"""gzip in and out: ISA-L (``isal``) when installed, the standard library's zlib otherwise.

Same format, same bytes out of ``inflater``; ISA-L inflates CloudTrail's files in about 0.6x
zlib's time and compresses ``_bulk`` bodies at its level 1 in about 0.2x zlib's level-1 time,
a little smaller (``benchmarks/bench_cpu.py``).
"""
from __future__ import annotations

from typing import Any

try:
    from isal import igzip as _gzip, isal_zlib as _zlib
    LIBRARY = "isal"
except ImportError:  # pragma: no cover - the standard library gives the same format
    import gzip as _gzip  # type: ignore[no-redef]
    import zlib as _zlib  # type: ignore[no-redef]
    LIBRARY = "zlib"
#: Level of ``_bulk`` bodies: 1, the fastest that compresses (of 0-3 in ISA-L, 0-9 in zlib).
LEVEL = 1

#: Raised for corrupt compressed data, by whichever library is in use.
Error: type[Exception] = _zlib.error  # type: ignore[assignment]  # isal types it as an instance


def compress(data: bytes) -> bytes:
    """``data`` as one gzip member, at the fastest level that still compresses."""
    return _gzip.compress(data, LEVEL)


def inflater() -> Any:
    """A decompress object for one gzip member (zlib's interface: ``max_length``, ``eof``...)."""
    return _zlib.decompressobj(wbits=31)
