"""A Sigma regular expression (PCRE-like, searched anywhere in a value) as a Lucene one.

Lucene's ``regexp`` query matches a whole term and knows no anchors, no lookaround, no word
boundary and no shorthand classes on every engine version; ``"`` delimits a string and
``#@&<>~`` are operators under some flags. So the pattern is parsed (by Python's own parser)
and written again: literals escaped, ``\\d \\w \\s`` as explicit ASCII classes (as PCRE reads
them), ``.`` without the newline unless ``(?s)``, ``(?i)`` over a part as letter classes,
``^`` / ``$`` / ``\\A`` / ``\\Z`` at the ends of the pattern (or of its top-level alternatives)
as the absence of Lucene's implicit ``.*`` there, ``$`` also before a final newline, and with
``(?m)`` after or before any newline. What Lucene cannot say is refused with the reason
(``Untranslatable``): lookaround, ``\\b`` / ``\\B``, backreferences, conditionals, atomic
groups and possessive quantifiers, anchors inside the pattern.

Case-insensitivity of the whole pattern (``(?i)`` at the start, Sigma's ``|re|i``) is left
to the query's ``case_insensitive`` (ASCII, as Lucene applies it), reported by ``translate``.
"""
from __future__ import annotations

import re
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any, NamedTuple

#: The engines' default ``index.max_regex_length``: a longer pattern is refused by the cluster.
MAX_LENGTH = 1000
_NEWLINE = "\n"
_DIGIT = "0-9"
_WORD = "a-zA-Z0-9_"
_SPACE = " \t\n\r\f\v"
_CATEGORIES = {
    sre.CATEGORY_DIGIT: (_DIGIT, False), sre.CATEGORY_NOT_DIGIT: (_DIGIT, True),
    sre.CATEGORY_WORD: (_WORD, False), sre.CATEGORY_NOT_WORD: (_WORD, True),
    sre.CATEGORY_SPACE: (_SPACE, False), sre.CATEGORY_NOT_SPACE: (_SPACE, True),
}
_START = (sre.AT_BEGINNING, sre.AT_BEGINNING_STRING)
_END = (sre.AT_END, sre.AT_END_STRING)


class Untranslatable(ValueError):
    """The pattern says something Lucene's regular expressions cannot."""


class Translation(NamedTuple):
    regexp: str
    #: The whole pattern is case-insensitive (``(?i)`` at its start): set ``case_insensitive``.
    case_insensitive: bool


def translate(pattern: str, ignorecase: bool = False, multiline: bool = False,
              dotall: bool = False) -> Translation:
    """``pattern`` searched anywhere in a value, as a Lucene regular expression of the whole value."""
    leading = _GLOBAL_FLAGS.match(pattern)
    prefix = leading.group(0) if leading else ""
    # Each top-level alternative is parsed alone: Python's parser moves a prefix common to
    # all alternatives out of them, which would hide where each one's anchors stand.
    alternatives = [prefix + part for part in top_level_alternatives(pattern[len(prefix):])]
    try:
        parsed = [sre_parse.parse(part, re.ASCII) for part in alternatives]
    except re.error as exc:
        raise Untranslatable(f"not a valid regular expression: {exc}") from None
    flags = parsed[0].state.flags
    ignorecase = ignorecase or bool(flags & re.IGNORECASE)
    writer = _Writer(dotall or bool(flags & re.DOTALL), multiline or bool(flags & re.MULTILINE),
                     ignorecase)
    regexp = "|".join(writer.search(list(part)) for part in parsed)
    if len(regexp) > MAX_LENGTH:
        raise Untranslatable(f"the regular expression is {len(regexp)} characters long in Lucene's "
                             f"syntax, over the engines' index.max_regex_length ({MAX_LENGTH})")
    return Translation(regexp, ignorecase)


_GLOBAL_FLAGS = re.compile(r"(\(\?[aiLmsux]+\))+")


def top_level_alternatives(pattern: str) -> list[str]:
    """``pattern`` split at each ``|`` outside groups, classes and escapes."""
    parts, start, depth, index, in_class = [], 0, 0, 0, False
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            index += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            if pattern[index + 1:index + 2] == "^":
                index += 1
            if pattern[index + 1:index + 2] == "]":  # a ] first in a class is a literal
                index += 1
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append(pattern[start:index])
            start = index + 1
        index += 1
    return parts + [pattern[start:]]


def _escaped(char: str) -> str:
    return "\\" + char if char.isascii() and not char.isalnum() else char


class _Writer:
    def __init__(self, dotall: bool, multiline: bool, fold_classes: bool) -> None:
        self.dotall = dotall
        self.multiline = multiline
        self.ignorecase = False  # only inside a scoped (?i:...) group
        #: Lucene's ``case_insensitive`` folds single characters, not classes: those are
        #: folded here when the whole pattern is case-insensitive.
        self.fold_classes = fold_classes

    # -- anchors: where Lucene's implicit whole-value match needs no .* ------------------------

    def search(self, items: list[Any]) -> str:
        """A sequence searched anywhere: ``.*`` at each end it is not anchored to."""
        if len(items) == 1 and items[0][0] is sre.SUBPATTERN and not any(items[0][1][1:3]):
            return self.search(list(items[0][1][3]))
        head, tail = ".*", ".*"
        if items and items[0][0] is sre.AT and items[0][1] in _START:
            multiline = self.multiline and items[0][1] is sre.AT_BEGINNING
            head = f"(.*{_NEWLINE})?" if multiline else ""
            items = items[1:]
        if items and items[-1][0] is sre.AT and items[-1][1] in _END:
            multiline = self.multiline and items[-1][1] is sre.AT_END
            tail = f"({_NEWLINE}.*)?" if multiline else (
                f"({_NEWLINE})?" if items[-1][1] is sre.AT_END else "")
            items = items[:-1]
        return head + self.sequence(items) + tail

    # -- everything else -------------------------------------------------------------------

    def sequence(self, items: Any) -> str:
        return "".join(self.item(op, value) for op, value in items)

    def item(self, op: Any, value: Any) -> str:  # noqa: C901 - one branch per opcode
        if op is sre.LITERAL:
            return self.literal(chr(value))
        if op is sre.NOT_LITERAL:
            return "[^" + self.class_literal(chr(value)) + "]"
        if op is sre.ANY:
            return "." if self.dotall else f"[^{_NEWLINE}]"
        if op is sre.IN:
            return self.char_class(value)
        if op is sre.CATEGORY:
            chars, negated = _CATEGORIES[value]
            return ("[^" if negated else "[") + chars + "]"
        if op is sre.BRANCH:
            # Python's parser moves what the alternatives share out of them, which can leave
            # one empty ("(ab|a)" -> "a(b|)"); Lucene takes no empty alternative: optional.
            alternatives = [self.sequence(alt) for alt in value[1]]
            present = list(dict.fromkeys(alt for alt in alternatives if alt))
            if not present:
                return ""
            return "(" + "|".join(present) + ")" + ("?" if "" in alternatives else "")
        if op is sre.SUBPATTERN:
            return self.group(*value)
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):  # lazy or greedy: the same set of matches
            low, high, inner = value
            body = self.sequence(inner)
            return "(" + body + ")" + _quantifier(low, high) if body else ""
        if op is sre.AT:
            if value in (sre.AT_BOUNDARY, sre.AT_NON_BOUNDARY):
                raise Untranslatable("a word boundary (\\b, \\B) has no equivalent in Lucene's "
                                     "regular expressions")
            raise Untranslatable("an anchor (^, $, \\A, \\Z) inside the pattern: only at its ends "
                                 "or at the ends of its top-level alternatives")
        if op in (sre.ASSERT, sre.ASSERT_NOT):
            raise Untranslatable("a lookahead or lookbehind has no equivalent in Lucene's regular "
                                 "expressions")
        if op in (sre.GROUPREF, sre.GROUPREF_EXISTS):
            raise Untranslatable("a backreference has no equivalent in Lucene's regular expressions")
        raise Untranslatable(f"{str(op).lower().replace('_', ' ')} has no equivalent in Lucene's "
                             "regular expressions")

    def group(self, _group: Any, add: int, remove: int, inner: Any) -> str:
        if (add | remove) & re.MULTILINE:
            raise Untranslatable("a scoped (?m:...) flag is not supported")
        saved = self.ignorecase, self.dotall
        self.ignorecase = bool(add & re.IGNORECASE) or (self.ignorecase and not remove & re.IGNORECASE)
        self.dotall = bool(add & re.DOTALL) or (self.dotall and not remove & re.DOTALL)
        try:
            body = self.sequence(inner)
            return "(" + body + ")" if body else ""  # Lucene takes no empty group
        finally:
            self.ignorecase, self.dotall = saved

    def literal(self, char: str) -> str:
        if self.ignorecase and char.isascii() and char.isalpha():
            return f"[{char.lower()}{char.upper()}]"
        return _escaped(char)

    def class_literal(self, char: str) -> str:
        if (self.ignorecase or self.fold_classes) and char.isascii() and char.isalpha():
            return char.lower() + char.upper()
        return _escaped(char)

    def char_class(self, items: Any) -> str:
        negated = bool(items) and items[0][0] is sre.NEGATE
        parts = []
        for op, value in items[1:] if negated else items:
            if op is sre.LITERAL:
                parts.append(self.class_literal(chr(value)))
            elif op is sre.RANGE:
                low, high = value
                parts.append(f"{_escaped(chr(low))}-{_escaped(chr(high))}")
                if self.ignorecase or self.fold_classes:
                    parts.extend(_other_case_ranges(low, high))
            elif op is sre.CATEGORY:
                chars, category_negated = _CATEGORIES[value]
                if category_negated:
                    raise Untranslatable("a negated class escape (\\D, \\W, \\S) inside a [...] "
                                         "class is not supported")
                parts.append(chars)
            else:
                raise Untranslatable(f"{op} inside a character class is not supported")
        return ("[^" if negated else "[") + "".join(parts) + "]"


def _quantifier(low: int, high: int) -> str:
    if high == sre.MAXREPEAT:
        return {0: "*", 1: "+"}.get(low, f"{{{low},}}")
    if (low, high) == (0, 1):
        return "?"
    return f"{{{low}}}" if low == high else f"{{{low},{high}}}"


def _other_case_ranges(low: int, high: int) -> list[str]:
    """The ASCII letters of ``low-high`` in the other case, as ranges."""
    ranges = []
    for first, last, shift in ((ord("a"), ord("z"), -32), (ord("A"), ord("Z"), 32)):
        start, end = max(low, first), min(high, last)
        if start <= end:
            ranges.append(f"{chr(start + shift)}-{chr(end + shift)}")
    return ranges
