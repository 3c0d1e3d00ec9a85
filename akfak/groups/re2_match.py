"""Matching a parsed RE2 regex (akfak.groups.re2) in linear time, as RE2 does: a Thompson NFA
run as a lazily built DFA, so that no regex a client sends makes the broker backtrack
(Python's `re` takes minutes on `(.*.*)*x` against an 18-letter topic name; RE2/J, and so
Kafka, a few microseconds).

The automaton is built over ASCII runes (topic names hold nothing else).  One beyond
MAX_STATES states is refused ("expression too large", INVALID_REGULAR_EXPRESSION) where
RE2/J, which has no such limit, builds it: `(a{1000}){1000}` would cost a million states.
"""

from __future__ import annotations

from typing import Any

#: The parsed regex: ("set", ASCII runes) matches one of them, ("assert", kind) the empty
#: string where `kind` holds, ("cat", nodes), ("alt", nodes), ("rep", node, min, max or -1).
Node = tuple[Any, ...]
#: the assertion kinds: \A, \z, ^ and $ in multi-line mode, \b, \B
BOT, EOT, BOL, EOL, WORD_BOUNDARY, NO_WORD_BOUNDARY = "A", "z", "^", "$", "b", "B"
MAX_STATES = 100_000
_MEMO_LIMIT = 20_000  # DFA transitions kept per regex before starting afresh

_CHAR, _SPLIT, _EMPTY, _MATCH = range(4)
_WORD = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz")
# the context of a position: which assertions hold there
_AT_BOT, _AT_EOT, _AT_BOL, _AT_EOL, _AT_BOUNDARY = 1, 2, 4, 8, 16
#: what a previous rune means to assertions: -1 (none: the start) 0, newline 1, word 2, other 3
_KIND_OF = {-1: 0, 10: 1, **dict.fromkeys(_WORD, 2)}
_NEEDS = {BOT: _AT_BOT, EOT: _AT_EOT, BOL: _AT_BOL, EOL: _AT_EOL, WORD_BOUNDARY: _AT_BOUNDARY}


class Re2Error(ValueError):
    """What RE2/J's PatternSyntaxException would report."""


class Matcher:
    """`fullmatch(name)`: whether the regex matches all of `name`."""

    def __init__(self, node: Node) -> None:
        self.kind: list[int] = []
        self.arg: list[Any] = []
        self.out: list[int] = []
        self.alt: list[int] = []
        match = self._state(_MATCH)
        self.start = self._build(node, match)
        self._start = frozenset({self.start})
        self._closures: dict[tuple[frozenset[int], int], frozenset[int]] = {}
        self._steps: dict[tuple[frozenset[int], int], frozenset[int]] = {}
        self._moves: dict[tuple[frozenset[int], int, int], frozenset[int]] = {}

    def _state(self, kind: int, arg: Any = None, out: int = -1, alt: int = -1) -> int:
        if len(self.kind) >= MAX_STATES:
            raise Re2Error("expression too large")
        self.kind.append(kind)
        self.arg.append(arg)
        self.out.append(out)
        self.alt.append(alt)
        return len(self.kind) - 1

    def _build(self, node: Node, then: int) -> int:
        """The start of `node`'s states, which continue to `then` (built back to front)."""
        tag = node[0]
        if tag == "set":
            return self._state(_CHAR, node[1], then)
        if tag == "assert":
            return self._state(_EMPTY, node[1], then)
        if tag == "cat":
            for sub in reversed(node[1]):
                then = self._build(sub, then)
            return then
        if tag == "alt":
            starts = [self._build(sub, then) for sub in node[1]]
            if not starts:
                return then
            first = starts[-1]
            for start in reversed(starts[:-1]):
                first = self._state(_SPLIT, None, start, first)
            return first
        _, sub, low, high = node
        tail = then
        if high < 0:  # sub* after the `low` copies: a split looping through sub
            loop = self._state(_SPLIT, None, -1, then)
            self.out[loop] = self._build(sub, loop)
            tail = loop
        else:
            for _ in range(high - low):  # optional copies, each may end the repetition
                tail = self._state(_SPLIT, None, self._build(sub, tail), then)
        for _ in range(low):
            tail = self._build(sub, tail)
        return tail

    def _closure(self, states: frozenset[int], context: int) -> frozenset[int]:
        key = (states, context)
        found = self._closures.get(key)
        if found is not None:
            return found
        seen: set[int] = set()
        kept: set[int] = set()
        todo = list(states)
        while todo:
            s = todo.pop()
            if s in seen:
                continue
            seen.add(s)
            kind = self.kind[s]
            if kind == _SPLIT:
                todo += (self.out[s], self.alt[s])
            elif kind == _EMPTY:
                need = self.arg[s]
                if need == NO_WORD_BOUNDARY:
                    holds = not context & _AT_BOUNDARY
                else:
                    holds = bool(context & _NEEDS[need])
                if holds:
                    todo.append(self.out[s])
            else:
                kept.add(s)
        result = frozenset(kept)
        if len(self._closures) > _MEMO_LIMIT:
            self._closures.clear()
        self._closures[key] = result
        return result

    def _step(self, states: frozenset[int], rune: int) -> frozenset[int]:
        key = (states, rune)
        found = self._steps.get(key)
        if found is None:
            found = frozenset(self.out[s] for s in states
                              if self.kind[s] == _CHAR and rune in self.arg[s])
            if len(self._steps) > _MEMO_LIMIT:
                self._steps.clear()
            self._steps[key] = found
        return found

    def _context(self, previous: int, rune: int) -> int:
        return ((_AT_BOT | _AT_BOL if previous < 0 else _AT_BOL if previous == 10 else 0)
                | (_AT_EOT | _AT_EOL if rune < 0 else _AT_EOL if rune == 10 else 0)
                | (_AT_BOUNDARY if (previous in _WORD) != (rune in _WORD) else 0))

    def fullmatch(self, text: str) -> bool:
        # One lookup per rune: the DFA's move from (states, what the previous rune was, rune);
        # the previous rune matters only as start, newline, word rune or other (assertions).
        moves = self._moves
        current, previous = self._start, -1
        for ch in text:
            rune = ord(ch)
            key = (current, _KIND_OF.get(previous, 3), rune)
            following = moves.get(key)
            if following is None:
                following = self._step(self._closure(current, self._context(previous, rune)), rune)
                if len(moves) > _MEMO_LIMIT:
                    moves.clear()
                moves[key] = following
            if not following:
                return False
            current, previous = following, rune
        closed = self._closure(current, self._context(previous, -1))
        return any(self.kind[s] == _MATCH for s in closed)
