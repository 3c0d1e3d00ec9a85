"""Kafka's `sasl.jaas.config` values, parsed as Kafka's JaasConfig does.

A value is one or more entries `LoginModuleClass flag key=value ... ;`, tokenized as Java's
StreamTokenizer does with Kafka's settings: whitespace separates, `//`, `/* */` (and a lone `/`)
start comments, words are letters, digits, `.`, `-`, `_`, `$`, values are words or strings in
double or single quotes with Java's escapes (`\\"`, `\\\\`, `\\n`, octal ...). A bare number is
not a value (Kafka: "Value not specified for key"). Errors are Kafka's messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_FLAGS = ("REQUIRED", "REQUISITE", "SUFFICIENT", "OPTIONAL")
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
WORD, NUMBER, QUOTED = "word", "number", "quoted"


class JaasConfigError(ValueError):
    """A sasl.jaas.config value Kafka would refuse."""


@dataclass(frozen=True)
class LoginModule:
    name: str
    flag: str
    options: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # options hold passwords: never print them
        return f"LoginModule({self.name!r}, {self.flag!r}, options={sorted(self.options)})"


def _is_word_start(ch: str) -> bool:
    return ch.isalpha() or ch in "-_$" or ord(ch) >= 0xA0


def _is_word_char(ch: str) -> bool:
    return _is_word_start(ch) or ch.isdigit() or ch == "."


def _tokens(text: str) -> list[tuple[str, str | None]]:
    """(kind, value) pairs: WORD/QUOTED with their text, NUMBER with None, or (char, None)."""
    out: list[tuple[str, str | None]] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch <= " ":
            i += 1
        elif ch == "/":
            if text.startswith("/*", i):
                end = text.find("*/", i + 2)
                i = n if end < 0 else end + 2
            else:  # "//" and a lone "/" (StreamTokenizer's comment char): to the end of the line
                end = text.find("\n", i)
                i = n if end < 0 else end + 1
        elif ch in "\"'":
            value, i = _quoted(text, i + 1, ch)
            out.append((QUOTED, value))
        elif ch.isdigit() or ch == ".":
            while i < n and (text[i].isdigit() or text[i] == "."):
                i += 1
            out.append((NUMBER, None))
        elif _is_word_start(ch):
            start = i
            while i < n and _is_word_char(text[i]):
                i += 1
            out.append((WORD, text[start:i]))
        else:
            out.append((ch, None))
            i += 1
    return out


def _quoted(text: str, i: int, quote: str) -> tuple[str, int]:
    chars: list[str] = []
    n = len(text)
    while i < n and text[i] != quote and text[i] not in "\n\r":
        ch = text[i]
        if ch == "\\" and i + 1 < n:
            nxt = text[i + 1]
            if nxt in "01234567":
                j = i + 1
                limit = j + (3 if nxt <= "3" else 2)
                while j < min(limit, n) and text[j] in "01234567":
                    j += 1
                chars.append(chr(int(text[i + 1:j], 8)))
                i = j
                continue
            chars.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        chars.append(ch)
        i += 1
    return "".join(chars), i + 1  # past the closing quote (or the line end, as Java does)


def parse_jaas_config(text: str) -> list[LoginModule]:
    """The login modules of a sasl.jaas.config value."""
    tokens = _tokens(text)
    modules: list[LoginModule] = []
    pos = 0

    def sval(k: int) -> str | None:
        return tokens[k][1] if k < len(tokens) else None

    while pos < len(tokens):
        name = sval(pos)
        pos += 1
        if pos >= len(tokens):
            raise JaasConfigError("Login module control flag not specified in JAAS config")
        flag = sval(pos)
        if flag is None:
            raise JaasConfigError("Login module control flag is not available in the JAAS config")
        if flag.upper() not in _FLAGS:
            raise JaasConfigError(f"Invalid login module control flag '{flag}' in JAAS config")
        pos += 1
        options: dict[str, str] = {}
        while pos < len(tokens) and tokens[pos][0] != ";":
            key = sval(pos)
            if pos + 2 >= len(tokens) or tokens[pos + 1][0] != "=" or sval(pos + 2) is None:
                raise JaasConfigError(f"Value not specified for key '{key}' in JAAS config")
            options[str(key)] = str(sval(pos + 2))
            pos += 3
        if pos >= len(tokens):
            raise JaasConfigError("JAAS config entry not terminated by semi-colon")
        pos += 1  # the ";"
        modules.append(LoginModule(str(name), flag.upper(), options))
    if not modules:
        raise JaasConfigError("Login module not specified in JAAS config")
    return modules


def single_login_module(text: str) -> LoginModule:
    """The one login module a broker's `<mechanism>.sasl.jaas.config` must hold (Kafka's
    JaasContext.load)."""
    modules = parse_jaas_config(text)
    if len(modules) != 1:
        raise JaasConfigError(f"JAAS config property contains {len(modules)} login modules, "
                              "should be 1 module")
    return modules[0]
