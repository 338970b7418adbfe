"""The fields a chunk of documents brings that its index lacks, found cheaply and typed as mapped.

Left to the engine, every document bringing a new leaf key (``requestParameters_flattened.<key>``)
makes the cluster apply one dynamic mapping update, one at a time, while the ``_bulk`` request
waits: a real trail spends most of its indexing time on them. Instead the writer declares a
chunk's new fields in one mapping update per index before sending the chunk (the first chunk's
ride in the index-creation body), each with the exact mapping the index's dynamic templates
would give it (``indexes.dynamic_mapping``), so the mapping ends up the same field for field.

Only the dynamic parts of a document are looked at: its top-level names against the names the
index has (one set difference), and the leaf keys of its ``<name>_flattened`` objects against
those mapped (one set difference each). Declaring is an optimisation, never a condition: a field
missed or a declaration refused is mapped dynamically by the engine as before.
"""
from __future__ import annotations

import threading
from typing import Any, Iterable

from cloudtrail_es.documents.transform import FLATTENED_SUFFIX

#: Top-level name -> the leaf keys of a dynamic object (``<name>_flattened``), or None for a
#: field without dynamic leaves (a string, or an object the static mapping declares whole).
Fields = dict[str, "set[str] | None"]


class Mapped:
    """The fields one index is known to have: top-level names, and the dynamic objects' leaves."""

    __slots__ = ("names", "objects")

    def __init__(self, static_names: Iterable[str]) -> None:
        self.names: Fields = dict.fromkeys(static_names)
        #: The names of ``names`` that are dynamic objects (their value a set of leaf keys).
        self.objects: set[str] = set()


class KnownFields:
    """The fields each index is known to have mapped, as far as this process knows.

    Starts from the static mapping for every index; grows with what is declared. Shared by the
    workers of a process: reads take no lock (the sets only grow), updates do.
    """

    def __init__(self, static_names: Iterable[str]) -> None:
        self._static = tuple(static_names)
        self._known: dict[str, Mapped] = {}
        self._lock = threading.Lock()

    def of(self, index: str) -> Mapped:
        known = self._known.get(index)
        if known is None:
            with self._lock:
                known = self._known.get(index)
                if known is None:
                    known = self._known[index] = Mapped(self._static)
        return known

    def add(self, index: str, fields: Fields) -> None:
        """``index`` has ``fields`` mapped (declared, or read from its mapping)."""
        known = self.of(index)
        with self._lock:
            for name, leaves in fields.items():
                if name not in known.names:
                    known.names[name] = set(leaves) if leaves is not None else None
                    if leaves is not None:
                        known.objects.add(name)
                else:
                    mapped = known.names[name]
                    if mapped is not None and leaves is not None:
                        mapped.update(leaves)

    def missing(self, index: str, fields: Fields) -> Fields:
        """The part of ``fields`` this process does not know ``index`` to have."""
        known = self.of(index).names
        out: Fields = {}
        for name, leaves in fields.items():
            if name not in known:
                out[name] = leaves
            elif leaves is not None:
                mapped = known[name]
                if mapped is not None:
                    new = leaves - mapped
                    if new:
                        out[name] = new
        return out


def scan(document: dict[str, Any], known: Mapped, into: Fields) -> None:
    """Add to ``into`` the fields ``document`` brings that ``known`` lacks (per event: cheap).

    A new top-level string is a field; a new ``<name>_flattened`` object brings itself and its
    leaf keys; any other new value (none of our documents has one) is left to the engine.
    """
    names = known.names
    keys = document.keys()
    if not keys <= names.keys():  # a comparison allocates nothing: most documents stop here
        for name in keys - names.keys():
            value = document[name]
            if type(value) is dict:
                if name.endswith(FLATTENED_SUFFIX):
                    _add_leaves(into, name, value)
            elif type(value) is str and name not in into:
                into[name] = None
    for name in keys & known.objects:
        value = document[name]
        if type(value) is dict:
            mapped: set[str] = names[name]  # type: ignore[assignment]
            if not value.keys() <= mapped:
                _add_leaves(into, name, value.keys() - mapped)


def _add_leaves(into: Fields, name: str, leaves: Iterable[str]) -> None:
    pending = into.get(name, _ABSENT)
    if pending is _ABSENT:
        into[name] = set(leaves)
    elif pending is not None:
        pending.update(leaves)


_ABSENT: Any = object()
