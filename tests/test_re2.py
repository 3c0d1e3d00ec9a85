"""akfak.groups.topic_regex against RE2/J itself: for every regex of a corpus (each construct of the
syntax, then a few thousand random combinations of its tokens), whether it compiles (and the
error's description if not) and which topic names it matches in full must be what
com.google.re2j 1.8 answers (the jar Kafka 4.1.1 runs its group coordinator with, from Kafka's
classpath; tests/re2/Re2Oracle.java).  Then SubscribedTopicRegex over the wire: RE2-only
syntax resolves, Python-only syntax is INVALID_REGULAR_EXPRESSION with RE2/J's description.
"""

from __future__ import annotations

import random
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kio.schema.errors import ErrorCode

from akfak.groups.topic_regex import compile_re2, syntax_error

pytestmark = pytest.mark.timeout(300)

TOPICS = ["a", "b", "ab", "aab", "abc", "A", "AB", "Ab", "k", "K", "kK", "s", "S", "sS", "x",
          "0", "09", "a1", "a-b", "a.b", "a_b", "-", "_", ".x", "kafka", "rx-one", "rx-two",
          "Rx-Two", "aaaa", "bbb", "a-", "KS", "ks", "__consumer_offsets", "t9.v_1-x"]

CORPUS = [
    "", "a", "ab|b", "a*", "a+b", "a?", "a{2}", "a{2,}", "a{1,3}", "a{,2}", "a{01}", "a{1001}",
    "a{3,2}", "a{2}{3}", "a**", "a*+", "a++", "a?+", "a*?", "a{2}?", "*a", "(*a)", "a|*", "^*",
    "(?i)a*(?i)*", "a(?i)*", "(a)", "(?:a|b)+", "((a)", "a)", "()", "(|a)b", "a|", "^a$", "\\Aab\\z",
    "\\Z", "ab\\Z", "a\\b", "\\bab\\b", "\\Ba", ".", ".*", "(?s).+", "(?m)^a$", "(?i)AB", "(?i)k",
    "(?i:a)B", "x(?i)a|b", "(a(?i)b|c)d", "(?-i)a", "(?i-i)A", "(?i-)a", "(?)a", "(?U)a*",
    "(?x)a", "(?=a)a", "(?!b)a", "(?<=a)b", "(?<!a)b", "(?>a)", "(?#c)a", "(a)\\1", "(?P<n>a)",
    "(?<n>a)", "(?P<n>a)(?P<n>b)", "(?P<>a)", "(?P<n-1>a)", "(?P=n)", "(?'n'a)", "(?(1)a|b)",
    "\\d+", "\\D", "\\w+", "\\W", "\\s", "\\S+", "[a-c]+", "[^a]", "[]a]", "[^]a]", "[a-]", "[-a]",
    "[a-b-c]", "[z-a]", "[a", "a]", "[[]", "[[:alpha:]]+", "[[:^alpha:]]", "[[:word:]]+",
    "[[:foo:]]", "[[:punct:]]", "[[:upper:]]+", "(?i)[[:upper:]]+", "(?i)[[:^upper:]]", "[[:]",
    "\\pL+", "\\PL", "\\p{L}+", "\\p{Lu}", "(?i)\\p{Lu}+", "\\p{^Lu}", "\\P{^Lu}", "\\p{Latin}+",
    "\\p{Greek}", "\\p{Common}+", "\\p{Han}", "\\p{Foo}", "\\p", "\\p{L", "\\pN+", "\\p{Nd}",
    "\\p{Any}+", "[\\pL\\d]+", "[^\\PL]+", "(?i)[\\PL]", "\\QA.b\\E", "\\Qa.b", "a\\Q\\E", "\\x41",
    "\\x{4B}", "\\x{}", "\\x{110000}", "\\x4", "\\x", "\\101", "\\0", "\\1", "\\12", "\\8",
    "\\.", "\\-", "\\_", "\\e", "\\u0041", "\\N{LATIN SMALL LETTER A}", "\\C", "\\", "a\\",
    "\\a", "\\v", "[\\b]", "[\\d-z]", "[a-\\d]", "(?i)\\x{212A}", "\\x{212A}", "(?i)[\\x{17F}]",
    "(?i)[^k]", "(?i)[^\\x{212A}]", "[\\x{100}-\\x{300}]", "(?i)[\\x{100}-\\x{300}]", "[^\\n]+",
    "rx-.*", "^rx-.*", ".*-two", "(?i)rx-TWO", "__.*", "t[0-9]\\.v_\\d-x", "[[:alnum:]._-]+",
    "(a|ab)(c|bcd)?", "(?:k|s){2}", "a{1000}", "(a{1000}){10}", "[\\Qa\\E]", "(a*)*b", "(.*.*)*x",
    "((a|b)*c)*", "(?:a?){3}a{3}",
]

#: RE2/J's answer, then RE2's (akfak's): what the README lists under the regex differences
KNOWN_DIFFERENCES = {
    "[[:]": ("invalid character class range", set()),  # RE2: a class of "[" and ":"
    "(a{1000}){10}": (set(), "invalid repeat count"),  # RE2: repeat counts 1000 in all
    "\\\u017f\\101": (set(), "invalid escape sequence"),  # RE2: no escaped non-ASCII letter
}

TOKENS = ["a", "b", "k", "K", "s", "S", "x", ".", "-", "_", "0", "9", "*", "+", "?", "{2}",
          "{1,3}", "{,2}", "{0}", "(", ")", "(?:", "(?i)", "(?i:", "(?-i)", "(?s)", "(?m)", "(?U)",
          "|", "[", "]", "^", "$", "[a-c]", "[^a]", "[[:alpha:]]", "[[:^digit:]]", "\\d", "\\D",
          "\\w", "\\W", "\\s", "\\pL", "\\p{Lu}", "\\PL", "\\p{^Ll}", "\\p{Latin}", "\\p{Greek}",
          "\\b", "\\B", "\\A", "\\z", "\\Z", "\\Q", "\\E", "\\x4B", "\\x{73}", "\\101", "\\1",
          "\\.", "(?=", "(?P<n>", "(?<m>", "\\", "\\x{212A}", "\u017f", "-]", "[-", "[^", "a-"]


def random_corpus(count: int) -> list[str]:
    rng = random.Random(848)
    return ["".join(rng.choice(TOKENS) for _ in range(rng.randint(1, 6))) for _ in range(count)]


def oracle(regexes: list[str]) -> list[set[int] | str]:
    from tests.kafka_peer import kafka_classpath

    re2j = [e for e in kafka_classpath().split(":") if "/re2j-" in e]
    assert re2j, "no re2j on Kafka's classpath"
    source = Path(__file__).parent / "re2" / "Re2Oracle.java"
    run = subprocess.run(["java", "-cp", re2j[0], str(source), *TOPICS], capture_output=True, text=True,
                         input="".join(r.encode().hex() + "\n" for r in regexes), timeout=240, check=True)
    answers = run.stdout.splitlines()
    assert len(answers) == len(regexes), run.stderr[-2000:]
    return [a[2:] if a.startswith("E ") else {int(i) for i in a.split()[1:]} for a in answers]


def akfak(regex: str) -> set[int] | str:
    """The syntax error's description, or the indexes of the topics matched."""
    error = syntax_error(regex)
    if error is not None:
        return error
    matcher = compile_re2(regex)
    return {i for i, t in enumerate(TOPICS) if matcher.fullmatch(t)}


@pytest.mark.jvm
def test_validity_and_matches_are_re2j_s() -> None:
    regexes = CORPUS + random_corpus(4000)
    expected = oracle(regexes)
    wrong = {r: (e, akfak(r)) for r, e in zip(regexes, expected, strict=True) if akfak(r) != e}
    assert wrong == KNOWN_DIFFERENCES, f"{len(wrong)} differ, e.g. {list(wrong.items())[:10]}"
    # the corpus is not all errors, nor all matches of nothing
    assert sum(isinstance(e, str) for e in expected) > 500
    assert sum(isinstance(e, set) and bool(e) for e in expected) > 500


def test_matching_takes_linear_time_and_huge_automata_are_refused() -> None:
    """What makes Python's re backtrack for minutes takes RE2 no time; a regex whose
    automaton would need more than RE2's memory bound is refused rather than built."""
    name = "a" * 249  # the longest topic name
    started = time.monotonic()
    for regex in ("(.*.*)*x", "(a|a)*b", "(a*)*b", "(?:a?){200}a{200}"):
        assert not compile_re2(regex).fullmatch(name + "!") and time.monotonic() - started < 5, regex
    assert compile_re2("(?:a?){200}a{200}").fullmatch("a" * 300)
    assert syntax_error("(a{1000}){1000}") == "invalid repeat count"  # RE2's bound: 1000 in all
    assert syntax_error("(" * 5000 + ")" * 5000) is None
    # RE2 would expand these counts for 0.25 s before refusing: refused at once
    started = time.monotonic()
    huge = "(?:" + "|".join(f"\\pL{{900}}{n}" for n in range(2600)) + ")"
    assert syntax_error(huge) == "expression too large" and time.monotonic() - started < 0.1
    assert syntax_error("\\pL{1000}") == "expression too large"  # over RE2's memory bound


def test_subscribed_topic_regex_uses_re2_syntax(broker_process: Any) -> None:
    from tests.test_consumer_groups_clients import create_topic
    from tests.test_consumer_groups_protocol import heartbeat
    from tests.wire import WireClient

    broker = broker_process()
    create_topic(broker.bootstrap, "re2-alpha", 1)
    create_topic(broker.bootstrap, "re2-9", 1)
    with WireClient(broker.port) as client:
        def join(group: str, regex: str) -> Any:
            return client.request(heartbeat(group, uuid.uuid4().hex[:22], 0, regex=regex, owned={},
                                            rebalance_ms=30_000))

        # POSIX classes are RE2's (Python's re reads [[:alpha:]] as a set of ":[ahlp")
        answer = join("re2-posix", "re2-[[:alpha:]]+")
        assert answer.error_code == ErrorCode.none
        assert [len(t.partitions) for t in answer.assignment.topic_partitions] == [1]
        assert join("re2-unicode", "re2-\\pN").error_code == ErrorCode.none
        for python_only in ("re2-(?!9).*", "(re2)-\\1", "re2-a*+lpha", "re2-.*\\Z"):
            refused = join("re2-python", python_only)
            assert refused.error_code == ErrorCode.invalid_regular_expression, python_only
        assert join("re2-python", "re2-(?!9).*").error_message == (
            "SubscribedTopicRegex `re2-(?!9).*` is not a valid regular expression: invalid or "
            "unsupported Perl syntax.")
