"""containerd's failpoint grammar: parse a failpoint, pick the term a call fires, and print it back.

The grammar and its semantics are containerd's (``pkg/failpoint/fail.go`` at v1.6.20, ``internal/failpoint`` at
v2.x), which its shim failpoint annotations and its failpoint CNI plugin use:

    <count>*<type>[(<arg>)][-><count>*<type>[(<arg>)]...]

Rules:
- ``<count>`` is one or more ASCII digits (leading zeros allowed, 0 allowed, at most 2**63-1) followed by ``*``.
- ``<type>`` is ``off`` (no argument: ``off()`` is an error), ``error(<msg>)``, ``panic(<msg>)`` or
  ``delay(<ms>)``. A message runs to the first ``)`` and must not be empty; it may hold anything else (``(``,
  ``->``, spaces). Milliseconds are ASCII digits as for counts; they are turned into a Go ``time.Duration``
  (nanoseconds in an int64, wrapping as Go's multiplication does: a wrapped negative duration sleeps not at all).
- Terms are joined by ``->`` with nothing around it; nothing may follow the last term. Empty text is an error.
- A parse error raises ``FailpointSyntaxError`` with Go's message (containerd shows it as is).
- ``Failpoint.next`` is Go's ``DelegatedEval``: the first term whose count is not 0 loses one and is returned;
  when every count is 0 it returns None, forever. A term with count 0 never fires.
- ``Failpoint.marshal`` is Go's ``Marshal``: the current counts, e.g. ``0*error(oops)->1*off``.
- Nothing here acts: the caller decides what firing a term means (shim/failpoint_wrap.py). Pure, no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DELAY", "ERROR", "Failpoint", "FailpointSyntaxError", "OFF", "PANIC", "Term", "parse"]

OFF, ERROR, PANIC, DELAY = "off", "error", "panic", "delay"
INT64_MAX = 2**63 - 1
_PREFIXES = (("off", OFF), ("error(", ERROR), ("panic(", PANIC), ("delay(", DELAY))


class FailpointSyntaxError(ValueError):
    """The text is not a failpoint; the message is containerd's for the same text."""


@dataclass(frozen=True)
class Term:
    """One term's action: ``kind`` is OFF, ERROR, PANIC or DELAY; ``message`` for ERROR and PANIC; ``delay_ns``
    (a Go ``time.Duration``, possibly wrapped negative) for DELAY."""

    kind: str
    message: str = ""
    delay_ns: int = 0

    @property
    def seconds(self) -> float:
        """How long a DELAY term sleeps (0 for a wrapped negative duration, as Go's time.Sleep)."""
        return max(self.delay_ns, 0) / 1e9

    def marshal(self) -> str:
        if self.kind in (ERROR, PANIC):
            return f"{self.kind}({self.message})"
        if self.kind == DELAY:
            return f"delay({_go_div(self.delay_ns, 1_000_000)})"
        return self.kind


class Failpoint:
    """A parsed failpoint with its remaining counts (see the module rules)."""

    def __init__(self, terms: list[tuple[int, Term]]) -> None:
        self.counts = [count for count, _ in terms]
        self.terms = [term for _, term in terms]

    def next(self) -> Term | None:
        """The term this call fires (its count decremented), or None when every count is used up."""
        for i, count in enumerate(self.counts):
            if count:
                self.counts[i] = count - 1
                return self.terms[i]
        return None

    def marshal(self) -> str:
        """containerd's text for the current state (Go's ``Marshal``)."""
        return "->".join(f"{count}*{term.marshal()}" for count, term in zip(self.counts, self.terms))

    def __repr__(self) -> str:
        return f"Failpoint({self.marshal()!r})"


def parse(text: str) -> Failpoint:
    """Parse ``text`` (see the module rules); raises FailpointSyntaxError."""
    rest, first = _term(text)
    terms = [first]
    while rest:
        if not rest.startswith("->"):
            raise FailpointSyntaxError(f"invalid cascading terms: {rest}")
        try:
            rest, term = _term(rest[2:])
        except FailpointSyntaxError as e:
            raise FailpointSyntaxError(f"failed to parse cascading term: {e}") from None
        terms.append(term)
    return Failpoint(terms)


def _term(text: str) -> tuple[str, tuple[int, Term]]:
    rest, count = _int64(text, "*")
    for prefix, kind in _PREFIXES:
        if rest.startswith(prefix):
            rest = rest[len(prefix):]
            break
    else:
        raise FailpointSyntaxError(f"invalid type format: {rest}")
    if kind in (ERROR, PANIC):
        end = rest.find(")")
        if end <= 0:
            raise FailpointSyntaxError(f"invalid argument for {kind} type")
        return rest[end + 1:], (count, Term(kind, message=rest[:end]))
    if kind == DELAY:
        rest, ms = _int64(rest, ")")
        return rest, (count, Term(DELAY, delay_ns=_wrap_int64(ms * 1_000_000)))
    return rest, (count, Term(OFF))


def _int64(text: str, terminator: str) -> tuple[str, int]:
    """Go's parseInt64: ASCII digits up to ``terminator``, which is consumed."""
    i = 0
    while i < len(text) and "0" <= text[i] <= "9":
        i += 1
    if i == 0 or i == len(text) or text[i] != terminator:
        raise FailpointSyntaxError(f"failed to parse int64 because of invalid terminate byte: {text}")
    value = int(text[:i])
    if value > INT64_MAX:
        raise FailpointSyntaxError(f"failed to parse int64 from {text[:i]}: "
                                   f'strconv.ParseInt: parsing "{text[:i]}": value out of range')
    return text[i + 1:], value


def _wrap_int64(value: int) -> int:
    """``value`` as Go's int64 arithmetic leaves it (two's complement wrap-around)."""
    return (value + 2**63) % 2**64 - 2**63


def _go_div(a: int, b: int) -> int:
    """Go's integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q
