"""RE2/J syntax, as Kafka compiles a KIP-848 SubscribedTopicRegex (com.google.re2j 1.8,
`Pattern.compile`: Perl flags, one-line mode), for matching topic names.

Kafka answers INVALID_REGULAR_EXPRESSION for what RE2/J does not parse and matches the rest
against every topic name in full.  `parse` reads the syntax as RE2/J's Parser does (the same
errors and descriptions: lookarounds, backreferences, possessive or stacked repetitions,
`\\Z`, `\\C`, unknown `\\p{..}` names, repeat counts over 1000, ...) into a tree whose
character classes (POSIX `[[:alpha:]]`, `\\pL`, `\\d`, ranges, case folding with RE2's
K/k/U+212A and S/s/U+017F orbits) are computed over ASCII, as topic names are
`[a-zA-Z0-9._-]+`; akfak.groups.re2_match matches it in linear time.  RE2's non-greedy
operators and `(?U)` cannot change whether a name matches in full, so they are accepted and
have no effect.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache

from akfak.groups.re2_match import BOL, BOT, EOL, EOT, Matcher, Node, Re2Error

CharSet = frozenset[int]

_LONG_S, _KELVIN = 0x17F, 0x212A  # the non-ASCII runes that case-fold to ASCII letters
_UNIVERSE: CharSet = frozenset((*range(128), _LONG_S, _KELVIN))
_ASCII_LETTERS = frozenset(c for c in range(128) if chr(c).isalpha())

_ORBITS: dict[int, CharSet] = {c: frozenset({ord(chr(c).lower()), ord(chr(c).upper())})
                               for c in _ASCII_LETTERS}
for _orbit in (frozenset({ord("k"), ord("K"), _KELVIN}), frozenset({ord("s"), ord("S"), _LONG_S})):
    for _c in _orbit:
        _ORBITS[_c] = _orbit

FOLD, MULTI_LINE, DOT_NL = 1, 2, 4
_FLAG_BITS = {"i": FOLD, "m": MULTI_LINE, "s": DOT_NL, "U": 0}
_REPEAT = re.compile(r"\{([0-9]+)(?:(,)([0-9]*))?\}")


def _span(*ranges: tuple[int, int]) -> CharSet:
    return frozenset(c for c in _UNIVERSE for lo, hi in ranges if lo <= c <= hi)


def _fold(chars: CharSet) -> CharSet:
    return frozenset(c for c in _UNIVERSE if _ORBITS.get(c, frozenset({c})) & chars)


def _digits() -> tuple[int, int]:
    return (0x30, 0x39)


_PERL = {"d": _span(_digits()), "s": _span((9, 10), (12, 13), (32, 32)),
         "w": _span(_digits(), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A))}
_POSIX = {
    "alnum": _span(_digits(), (0x41, 0x5A), (0x61, 0x7A)), "alpha": _span((0x41, 0x5A), (0x61, 0x7A)),
    "ascii": _span((0, 0x7F)), "blank": _span((9, 9), (32, 32)), "cntrl": _span((0, 0x1F), (0x7F, 0x7F)),
    "digit": _span(_digits()), "graph": _span((0x21, 0x7E)), "lower": _span((0x61, 0x7A)),
    "print": _span((0x20, 0x7E)), "punct": _span((0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)),
    "space": _span((9, 13), (32, 32)), "upper": _span((0x41, 0x5A)), "word": _PERL["w"],
    "xdigit": _span(_digits(), (0x41, 0x46), (0x61, 0x66)),
}
#: RE2/J 1.8's UnicodeTables: the general categories and the scripts it knows.
_CATEGORY_NAMES = (
    "C Cc Cf Co Cs L Ll Lm Lo Lt Lu M Mc Me Mn N Nd Nl No P Pc Pd Pe Pf Pi Po Ps S Sc Sk Sm So "
    "Z Zl Zp Zs")
_SCRIPT_NAMES = (
    "Arabic Armenian Avestan Balinese Bamum Batak Bengali Bopomofo Brahmi Braille Buginese Buhid "
    "Canadian_Aboriginal Carian Cham Cherokee Common Coptic Cuneiform Cypriot Cyrillic Deseret "
    "Devanagari Egyptian_Hieroglyphs Ethiopic Georgian Glagolitic Gothic Greek Gujarati Gurmukhi "
    "Han Hangul Hanunoo Hebrew Hiragana Imperial_Aramaic Inherited Inscriptional_Pahlavi "
    "Inscriptional_Parthian Javanese Kaithi Kannada Katakana Kayah_Li Kharoshthi Khmer Lao Latin "
    "Lepcha Limbu Linear_B Lisu Lycian Lydian Malayalam Mandaic Meetei_Mayek Mongolian Myanmar "
    "New_Tai_Lue Nko Ogham Ol_Chiki Old_Italic Old_Persian Old_South_Arabian Old_Turkic Oriya "
    "Osmanya Phags_Pa Phoenician Rejang Runic Samaritan Saurashtra Shavian Sinhala Sundanese "
    "Syloti_Nagri Syriac Tagalog Tagbanwa Tai_Le Tai_Tham Tai_Viet Tamil Telugu Thaana Thai "
    "Tibetan Tifinagh Ugaritic Unknown Vai Yi")
_CATEGORIES, _SCRIPTS = frozenset(_CATEGORY_NAMES.split()), frozenset(_SCRIPT_NAMES.split())
_LATIN = frozenset((*_ASCII_LETTERS, _LONG_S, _KELVIN))


def _unicode_table(name: str) -> CharSet | None:
    if name == "Any":
        return _UNIVERSE
    if name in _CATEGORIES:
        return frozenset(c for c in _UNIVERSE if unicodedata.category(chr(c)).startswith(name))
    if name in _SCRIPTS:  # in the universe only Latin (letters) and Common (the rest of ASCII)
        if name == "Latin":
            return _LATIN
        return _UNIVERSE - _LATIN if name == "Common" else frozenset()
    return None


def _set(chars: CharSet) -> Node:
    return ("set", frozenset(c for c in chars if c < 128))


@dataclass
class _Group:
    saved_flags: int
    alternatives: list[list[Node]] = field(default_factory=lambda: [[]])

    def node(self) -> Node:
        return ("alt", tuple(("cat", tuple(a)) for a in self.alternatives))


class _Parser:
    def __init__(self, regex: str) -> None:
        self.s, self.i, self.flags = regex, 0, 0
        self.stack = [_Group(0)]
        self.names: set[str] = set()

    def more(self) -> bool:
        return self.i < len(self.s)

    def peek(self, text: str) -> bool:
        return self.s.startswith(text, self.i)

    def push(self, atom: Node) -> None:
        self.stack[-1].alternatives[-1].append(atom)

    def literal(self, rune: int) -> None:
        chars = frozenset({rune})
        self.push(_set(_fold(chars) if self.flags & FOLD else chars))

    def chars(self, chars: CharSet, sign: int = 1) -> CharSet:
        """A group of `chars` with the current case folding, then its sign (appendGroup)."""
        if self.flags & FOLD:
            chars = _fold(chars)
        return chars if sign > 0 else _UNIVERSE - chars

    def parse(self) -> Node:
        last_repeat = False
        while self.more():
            c = self.s[self.i]
            repeat = False
            if c == "(":
                if self.peek("(?"):
                    self.perl_flags()
                else:
                    self.stack.append(_Group(self.flags))
                    self.i += 1
            elif c == "|":
                self.stack[-1].alternatives.append([])
                self.i += 1
            elif c == ")":
                if len(self.stack) == 1:  # RE2/J's stack underflow
                    raise Re2Error("regexp/syntax: internal error")
                group = self.stack.pop()
                self.flags = group.saved_flags
                self.push(group.node())
                self.i += 1
            elif c == "^":
                self.push(("assert", BOL if self.flags & MULTI_LINE else BOT))
                self.i += 1
            elif c == "$":
                self.push(("assert", EOL if self.flags & MULTI_LINE else EOT))
                self.i += 1
            elif c == ".":
                self.push(_set(_UNIVERSE if self.flags & DOT_NL else _UNIVERSE - {10}))
                self.i += 1
            elif c == "[":
                self.push(_set(self.char_class()))
            elif c in "*+?":
                self.i += 1
                self.repeat({"*": (0, -1), "+": (1, -1), "?": (0, 1)}[c], last_repeat)
                repeat = True
            elif c == "{":
                start = self.i
                counts = self.repeat_counts()
                if counts is None:  # not a repeat: a literal {
                    self.i = start + 1
                    self.literal(ord("{"))
                else:
                    self.repeat(counts, last_repeat)
                    repeat = True
            elif c == "\\":
                self.escape()
            else:
                self.literal(ord(c))
                self.i += 1
            last_repeat = repeat
        if len(self.stack) != 1:
            raise Re2Error("missing closing )")
        return self.stack[0].node()

    def repeat(self, op: tuple[int, int], last_repeat: bool) -> None:
        if self.peek("?"):  # non-greedy: the same full matches
            self.i += 1
        if last_repeat:
            raise Re2Error("invalid nested repetition operator")
        sequence = self.stack[-1].alternatives[-1]
        if not sequence:
            raise Re2Error("missing argument to repetition operator")
        sequence.append(("rep", sequence.pop(), *op))

    def repeat_counts(self) -> tuple[int, int] | None:
        """{n}, {n,} or {n,m} (parseRepeat): (min, max or -1), None if not of that form."""
        m = _REPEAT.match(self.s, self.i)
        if m is None:
            return None
        numbers = [n for n in (m.group(1), m.group(3)) if n]
        if any(len(n) > 1 and n[0] == "0" for n in numbers):  # leading zeros: not a repeat
            return None
        low = int(m.group(1))
        high = low if m.group(2) is None else (int(m.group(3)) if m.group(3) else -1)
        if low > 1000 or high > 1000 or (high >= 0 and low > high):
            raise Re2Error("invalid repeat count")
        self.i = m.end()
        return low, high

    def perl_flags(self) -> None:
        rest = self.s[self.i:]
        if rest.startswith(("(?P<", "(?<")):
            begin = 4 if rest[2] == "P" else 3
            end = rest.find(">", begin)
            if end < 0:
                raise Re2Error("invalid named capture")
            name = rest[begin:end]
            if not re.fullmatch(r"[A-Za-z0-9_]+", name):
                raise Re2Error("invalid named capture")
            if name in self.names:
                raise Re2Error("duplicate capture group name")
            self.names.add(name)
            self.stack.append(_Group(self.flags))
            self.i += end + 1
            return
        j, flags, sign, saw = self.i + 2, self.flags, 1, False
        while j < len(self.s):
            c = self.s[j]
            j += 1
            if c in _FLAG_BITS:
                flags = flags | _FLAG_BITS[c] if sign > 0 else flags & ~_FLAG_BITS[c]
                saw = True
            elif c == "-" and sign > 0:
                sign, saw = -1, False
            elif c in ":)" and (sign > 0 or saw):
                if c == ":":
                    self.stack.append(_Group(self.flags))
                self.flags, self.i = flags, j
                return
            else:
                break
        raise Re2Error("invalid or unsupported Perl syntax")

    def escape(self) -> None:
        if self.i + 1 >= len(self.s):
            raise Re2Error("trailing backslash at end of expression")
        c = self.s[self.i + 1]
        if c in "AbBz":
            self.push(("assert", c))
            self.i += 2
        elif c == "C":
            raise Re2Error("invalid escape sequence")
        elif c == "Q":
            end = self.s.find("\\E", self.i + 2)
            text = self.s[self.i + 2:] if end < 0 else self.s[self.i + 2:end]
            for ch in text:
                self.literal(ord(ch))
            self.i = len(self.s) if end < 0 else end + 2
        elif c in "pP":
            self.push(_set(self.unicode_class()))
        elif c.lower() in _PERL:
            self.push(_set(self.chars(_PERL[c.lower()], 1 if c.islower() else -1)))
            self.i += 2
        else:
            self.literal(self.rune_escape())

    def rune_escape(self) -> int:
        """parseEscape: one rune; at a backslash, then after the escape."""
        s = self.s
        self.i += 1
        if not self.more():
            raise Re2Error("trailing backslash at end of expression")
        c = s[self.i]
        self.i += 1
        if not (c.isascii() and c.isalnum()):
            return ord(c)
        if c in "01234567" and (c == "0" or (self.more() and s[self.i] in "01234567")):
            value = int(c)
            for _ in range(2):
                if not self.more() or s[self.i] not in "01234567":
                    break
                value = value * 8 + int(s[self.i])
                self.i += 1
            return value
        if c == "x" and self.more():
            if s[self.i] == "{":
                end = s.find("}", self.i + 1)
                digits = s[self.i + 1:end] if end >= 0 else ""
                if digits and all(d in "0123456789abcdefABCDEF" for d in digits) \
                        and int(digits, 16) <= 0x10FFFF:
                    self.i = end + 1
                    return int(digits, 16)
            elif re.fullmatch(r"[0-9a-fA-F]{2}", s[self.i:self.i + 2]):
                self.i += 2
                return int(s[self.i - 2:self.i], 16)
        simple = {"a": 7, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11}
        if c in simple:
            return simple[c]
        raise Re2Error("invalid escape sequence")

    def unicode_class(self) -> CharSet:
        """\\pX, \\p{Name}, \\p{^Name} and the \\P forms (parseUnicodeClass)."""
        sign = -1 if self.s[self.i + 1] == "P" else 1
        self.i += 2
        if not self.more():
            raise Re2Error("invalid character class range")
        if self.s[self.i] != "{":
            name = self.s[self.i]
            self.i += 1
        else:
            end = self.s.find("}", self.i)
            if end < 0:
                raise Re2Error("invalid character class range")
            name, self.i = self.s[self.i + 1:end], end + 1
        if name.startswith("^"):
            sign, name = -sign, name[1:]
        table = _unicode_table(name)
        if table is None:
            raise Re2Error("invalid character class range")
        return self.chars(table, sign)

    def class_char(self) -> int:
        if not self.more():
            raise Re2Error("missing closing ]")
        if self.peek("\\"):
            return self.rune_escape()
        self.i += 1
        return ord(self.s[self.i - 1])

    def char_class(self) -> CharSet:
        """[...] (parseClass), folded and negated as RE2/J does."""
        self.i += 1
        negated = self.peek("^")
        self.i += negated
        members: set[int] = set()
        first = True
        while not self.more() or self.s[self.i] != "]" or first:
            first = False
            if self.peek("[:") and (end := self.s.find(":]", self.i)) >= 0:
                name = self.s[self.i + 2:end]
                group = _POSIX.get(name[1:] if name.startswith("^") else name)
                if group is None:
                    raise Re2Error("invalid character class range")
                members |= self.chars(group, -1 if name.startswith("^") else 1)
                self.i = end + 2
                continue
            if self.peek("\\p") or self.peek("\\P"):
                members |= self.unicode_class()
                continue
            c = self.s[self.i + 1:self.i + 2]
            if self.peek("\\") and c and c in "dDsSwW":
                members |= self.chars(_PERL[c.lower()], 1 if c.islower() else -1)
                self.i += 2
                continue
            low = high = self.class_char()
            if self.peek("-") and not self.s.startswith("-]", self.i):
                self.i += 1
                high = self.class_char()
                if high < low:
                    raise Re2Error("invalid character class range")
            span = _span((low, high))
            members |= _fold(span) if self.flags & FOLD else span
        self.i += 1
        return _UNIVERSE - members if negated else frozenset(members)


def parse(regex: str) -> Node:
    """`regex` parsed as RE2/J parses it; Re2Error with RE2/J's description where it reports
    a syntax error (Kafka's INVALID_REGULAR_EXPRESSION)."""
    return _Parser(regex).parse()


@lru_cache(maxsize=1024)  # a group's regexes are resolved again whenever the topics change
def syntax_error(regex: str) -> str | None:
    """RE2/J's description of what is wrong with `regex`, None when it compiles."""
    try:
        compile_re2(regex)
    except Re2Error as e:
        return str(e)
    return None


@lru_cache(maxsize=1024)
def compile_re2(regex: str) -> Matcher:
    """A matcher of the topic names `regex` matches in full; Re2Error where RE2/J refuses it
    (or where it needs more than MAX_STATES states: see akfak.groups.re2_match)."""
    try:
        return Matcher(parse(regex))
    except RecursionError:  # deeper than Python's stack: refused, where RE2/J would take it
        raise Re2Error("expression nests too deeply") from None
