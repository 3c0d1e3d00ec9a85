"""KIP-848 SubscribedTopicRegex: RE2 syntax, as Kafka compiles it (com.google.re2j 1.8,
`Pattern.compile`), matched in full against topic names in linear time.

Google's RE2 itself does the work (`google-re2`, the maintained binding of the C++
library RE2/J was ported from): same syntax, and no regex can make matching backtrack, as
Python's `re` did for minutes on `(.*.*)*x`.  What is left is where the two tell a user
different things:
- RE2's error descriptions are mapped onto RE2/J's (Kafka puts them in the
  INVALID_REGULAR_EXPRESSION message);
- RE2/J refuses `\\C` (any byte) and a capture group name given twice, which RE2 accepts;
- RE2 refuses repeat counts whose product passes 1000 (`(a{1000}){10}`), escaped non-ASCII
  characters, and automata over MAX_MEMORY; akfak refuses repeat counts summing past
  MAX_REPEATS; RE2/J accepts all of those and reads `[[:]` as a bad range.  Otherwise both
  answer alike (validity, description, matches) for every regex of tests/test_re2.py's
  corpus of 4,000.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any, Protocol

import re2

#: RE2's error texts (the part before ': ') and what RE2/J says for the same fault.
_DESCRIPTIONS = {
    "bad repetition operator": "invalid nested repetition operator",
    "invalid character class range": "invalid character class range",
    "invalid character class": "invalid character class",
    "invalid escape sequence": "invalid escape sequence",
    "invalid named capture group": "invalid named capture",
    "invalid perl operator": "invalid or unsupported Perl syntax",
    "invalid repetition size": "invalid repeat count",
    "missing )": "missing closing )",
    "missing ]": "missing closing ]",
    "no argument for repetition operator": "missing argument to repetition operator",
    "trailing \\": "trailing backslash at end of expression",
    "unexpected )": "regexp/syntax: internal error",
    "invalid UTF-8": "invalid UTF-8",
    "pattern too large - compile failed": "expression too large",
    "pattern too large - reverse compile failed": "expression too large",
}
#: Enough memory for any sensible topic-name regex; beyond it RE2 refuses, not grows.
MAX_MEMORY = 1 << 20
#: RE2 expands `x{n}` into n copies before it checks its memory: a 32 KiB regex of large
#: counts over large classes took it 0.25 s on the reactor.  Refused beyond this sum.
MAX_REPEATS = 20_000
_COUNT = re.compile(r"\{([0-9]+)(?:,([0-9]*))?\}")

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would print every refused regex to stderr
_OPTIONS.max_mem = MAX_MEMORY


class TopicPattern(Protocol):
    def fullmatch(self, text: str) -> Any: ...


class Re2Error(ValueError):
    """What RE2/J's PatternSyntaxException would report."""


def _scan(regex: str) -> Iterator[tuple[int, str, str]]:
    """(position, "escape", letter) for each escape and (position, "name", name) for each
    named group, outside character classes and \\Q...\\E quoting (enough to find what RE2
    accepts and RE2/J not)."""
    i, n = 0, len(regex)
    class_start = -1  # where the current [...]'s members begin, -1 outside one
    while i < n:
        c = regex[i]
        if c == "\\":
            if regex.startswith("Q", i + 1):
                end = regex.find("\\E", i + 2)
                i = n if end < 0 else end + 2
                continue
            if class_start < 0:
                yield i, "escape", regex[i + 1:i + 2]
            i += 2
            continue
        if class_start >= 0:
            if regex.startswith("[:", i):
                end = regex.find(":]", i + 2)
                i = i + 1 if end < 0 else end + 2
                continue
            if c == "]" and i > class_start:
                class_start = -1
            i += 1
            continue
        if c == "[":
            class_start = i + 1 + (regex.startswith("^", i + 1))
            i = class_start
            continue
        if c == "{" and (count := _COUNT.match(regex, i)) is not None:
            yield i, "repeat", str(max(int(count[1]), int(count[2] or 0)))
            i = count.end()
            continue
        if regex.startswith("(?P<", i) or (regex.startswith("(?<", i)
                                          and regex[i + 3:i + 4] not in ("=", "!")):
            start = regex.index("<", i) + 1
            end = regex.find(">", start)
            if end > start:
                yield i, "name", regex[start:end]
        i += 1


def _re2j_only_fault(regex: str) -> tuple[int, str] | None:
    names: set[str] = set()
    repeats = 0
    for position, kind, text in _scan(regex):
        if kind == "repeat":
            repeats += int(text)
            if repeats > MAX_REPEATS:
                return position, "expression too large"
        if kind == "escape" and text == "C":
            return position, "invalid escape sequence"
        if kind == "name":
            if text in names:
                return position, "duplicate capture group name"
            names.add(text)
    return None


def _description(error: Exception) -> str:
    message = error.args[0] if error.args else ""
    text = message.decode(errors="replace") if isinstance(message, bytes) else str(message)
    fault, _, fragment = text.partition(": ")
    if fault == "invalid perl operator" and fragment.startswith("(?<"):
        return "invalid named capture"  # RE2/J reads (?<= and (?<! as a group name
    return _DESCRIPTIONS.get(fault, fault)


@lru_cache(maxsize=1024)  # a group's regexes are resolved again whenever the topics change
def compile_re2(regex: str) -> TopicPattern:
    """A compiled regex (its `fullmatch(name)` says whether it matches all of `name`);
    Re2Error with RE2/J's description where Kafka would refuse it."""
    fault = _re2j_only_fault(regex)
    if fault is not None:
        # RE2/J reads left to right: a fault before this one is what it reports (a group
        # still open there is not one: it may close later)
        position, description = fault
        try:
            re2.compile(regex[:position], _OPTIONS)
        except re2.error as e:
            earlier = _description(e)
            if earlier != "missing closing )":
                description = earlier
        raise Re2Error(description)
    try:
        compiled = re2.compile(regex, _OPTIONS)
    except re2.error as e:
        raise Re2Error(_description(e)) from None
    return compiled  # type: ignore[no-any-return]


def syntax_error(regex: str) -> str | None:
    """RE2/J's description of what is wrong with `regex`, None when it compiles."""
    try:
        compile_re2(regex)
    except Re2Error as e:
        return str(e)
    return None
