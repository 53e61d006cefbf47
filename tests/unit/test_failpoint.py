"""shim/failpoint.py against containerd's failpoint grammar.

The table's expectations are what containerd's own parser (pkg/failpoint at v1.6.20) answers for the same text:
its unit test's cases, plus edge cases run through it once by hand (a Go program fed these strings and 25,000
random ones, compared with this module: no difference). Hypothesis then checks the rules for any input."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shim import failpoint
from shim.failpoint import DELAY, ERROR, OFF, PANIC, FailpointSyntaxError, Term, parse

BAD_INT = "failed to parse int64 because of invalid terminate byte: "

# text -> its Marshal right after parsing (Go's canonical form), or the error Go gives
CASES = [
    # upstream's TestParseTerms
    ("5", BAD_INT + "5"),
    ("*off()", BAD_INT + "*off()"),
    ("5*off()", "invalid cascading terms: ()"),
    ("5*off(nothing)", "invalid cascading terms: (nothing)"),
    ("5*off(", "invalid cascading terms: ("),
    ("5*off", "=5*off"),
    ("10000error(oops)", BAD_INT + "10000error(oops)"),
    ("10*error(oops)", "=10*error(oops)"),
    ("1234*error(oops))", "invalid cascading terms: )"),
    ("12342*error()", "invalid argument for error type"),
    ("1panic(oops)", BAD_INT + "1panic(oops)"),
    ("1000000*panic(oops)", "=1000000*panic(oops)"),
    ("12345*panic(oops))", "invalid cascading terms: )"),
    ("12*panic()", "invalid argument for panic type"),
    ("1*delay(oops)", BAD_INT + "oops)"),
    ("1000000*delay(-1)", BAD_INT + "-1)"),
    ("1000000*delay(1)", "=1000000*delay(1)"),
    ("1*delay(1)-", "invalid cascading terms: -"),
    ("10*delay(2)->", "failed to parse cascading term: " + BAD_INT),
    ("11*delay(3)->10*off(", "invalid cascading terms: ("),
    ("12*delay(4)->10*of", "failed to parse cascading term: invalid type format: of"),
    ("13*delay(5)->10*off->1000*panic(oops)", "=13*delay(5)->10*off->1000*panic(oops)"),
    # edges, as Go answers them
    ("", BAD_INT),
    ("007*off", "=7*off"),
    ("0*error(x)->1*off", "=0*error(x)->1*off"),
    ("1*error(a(b)->1*off", "=1*error(a(b)->1*off"),       # a message runs to the first ")"
    ("1*error(x->y)", "=1*error(x->y)"),
    ("1*error(é)", "=1*error(é)"),
    ("1*panic(p)->x", "failed to parse cascading term: " + BAD_INT + "x"),
    ("9223372036854775808*off", 'failed to parse int64 from 9223372036854775808: strconv.ParseInt: parsing '
                                '"9223372036854775808": value out of range'),
    ("1*delay(9223372036854775808)", 'failed to parse int64 from 9223372036854775808: strconv.ParseInt: parsing '
                                     '"9223372036854775808": value out of range'),
    ("1*delay(9223372036854775807)", "=1*delay(-1)"),        # ms -> ns wraps in Go's int64
    ("1*delay(99999999999999)", "=1*delay(7766279631451)"),
    ("1*off->", "failed to parse cascading term: " + BAD_INT),
    ("1*off->->1*off", "failed to parse cascading term: " + BAD_INT + "->1*off"),
    ("1*OFF", "invalid type format: OFF"),
    (" 1*off", BAD_INT + " 1*off"),
    ("1*off ", "invalid cascading terms:  "),
    ("１*off", BAD_INT + "１*off"),                           # only ASCII digits
]


@pytest.mark.parametrize("text, expected", CASES)
def test_parse_as_containerd_does(text: str, expected: str) -> None:
    if expected.startswith("="):
        assert parse(text).marshal() == expected[1:]
    else:
        with pytest.raises(FailpointSyntaxError) as info:
            parse(text)
        assert str(info.value) == expected


def test_evaluate_as_upstream_test_does() -> None:
    """upstream's TestEvaluate: each term once, in order, then nothing."""
    fp = parse("1*error(oops-)->1*off->1*delay(1000)->1*panic(panic)")
    assert fp.next() == Term(ERROR, message="oops-")
    assert fp.next() == Term(OFF)
    assert fp.next() == Term(DELAY, delay_ns=1_000_000_000)
    assert fp.next() == Term(PANIC, message="panic")
    assert fp.marshal() == "0*error(oops-)->0*off->0*delay(1000)->0*panic(panic)"
    assert fp.next() is None and fp.next() is None


@pytest.mark.parametrize("text, fired", [
    ("0*error(x)->1*off", [OFF, None, None]),       # a term with count 0 never fires; the next one does
    ("2*off->1*error(e)", [OFF, OFF, ERROR, None]),  # "fire on the third call"
    ("1*delay(9223372036854775807)", [DELAY, None]),
])
def test_the_first_term_with_a_count_left_fires(text: str, fired: list) -> None:
    fp = parse(text)
    assert [getattr(fp.next(), "kind", None) for _ in fired] == fired


def test_a_wrapped_negative_delay_sleeps_not_at_all() -> None:
    assert parse("1*delay(9223372036854775807)").next().seconds == 0
    assert parse("1*delay(1500)").next().seconds == 1.5


# -- any input ----------------------------------------------------------------------------------------------------

ALPHABET = st.sampled_from(["0", "1", "9", "*", "off", "error(", "panic(", "delay(", ")", "(", "->", "-", ">", "x",
                            " ", "é", "9223372036854775808"])


@given(st.one_of(st.text(max_size=40), st.lists(ALPHABET, max_size=12).map("".join)))
def test_any_text_parses_or_raises_a_syntax_error(text: str) -> None:
    try:
        fp = parse(text)
    except FailpointSyntaxError as e:
        assert str(e)
    else:
        assert parse(fp.marshal()).marshal() == fp.marshal() or "delay(-" in fp.marshal()


MESSAGES = st.text(min_size=1, max_size=12).filter(lambda m: ")" not in m)
TERMS = st.one_of(st.just(OFF), MESSAGES.map(lambda m: f"error({m})"), MESSAGES.map(lambda m: f"panic({m})"),
                  st.integers(0, 10**12).map(lambda ms: f"delay({ms})"))
CHAINS = st.lists(st.tuples(st.integers(0, 2**63 - 1), TERMS), min_size=1, max_size=5)


@given(CHAINS)
def test_canonical_text_round_trips(chain: list[tuple[int, str]]) -> None:
    text = "->".join(f"{count}*{term}" for count, term in chain)
    assert parse(text).marshal() == text


@given(st.lists(st.tuples(st.integers(0, 4), TERMS), min_size=1, max_size=5))
def test_calls_use_up_the_counts_in_order(chain: list[tuple[int, str]]) -> None:
    """Model: the calls fire term 0 count_0 times, then term 1 count_1 times, ..., then nothing, forever."""
    fp = parse("->".join(f"{count}*{term}" for count, term in chain))
    expected = [parse(f"1*{term}").terms[0] for count, term in chain for _ in range(count)]
    assert [fp.next() for _ in range(len(expected) + 3)] == expected + [None] * 3
    assert fp.marshal() == "->".join(f"0*{term}" for _, term in chain)


def test_public_names() -> None:
    assert set(failpoint.__all__) == {"DELAY", "ERROR", "Failpoint", "FailpointSyntaxError", "OFF", "PANIC", "Term",
                                      "parse"}
