"""Conflict rules: how a field changed on both sides since the shadow is settled (pure).

A conflict is a field whose value on A and on B both differ from the shadow
(the value both last agreed on) and from each other; with no shadow yet (a
record matched at pairing) both values count as edits. For ``sum`` two
counters that both moved to the same value are a conflict too (both
counted). Rules:

- ``lww``: the value whose source commit is later wins. When the two commit
  times are closer than the ``skew`` bound, or unknown (0), no winner is
  picked: the conflict goes to the record's ``fallback`` rule (default
  ``manual``), because a clock skew of that size could have reversed the order.
  With ``skew: 0`` equal times go to the ``tie`` side.
- ``prefer: a|b``: that side is the source of truth for the field.
- ``non_null``: a value beats an empty one (None, ``""``, empty list/map);
  two non-empty values go to the fallback.
- ``max`` / ``min``: the larger / smaller (None counts as no value);
  incomparable values go to the fallback.
- ``sum``: counters; both sides' deltas since the shadow are added:
  ``shadow + (a - shadow) + (b - shadow)``. Without a shadow (pairing) the
  deltas are unknown: fallback.
- ``union``: lists/sets, merged three-way against the shadow: an item added on
  either side is kept, an item removed on either side stays removed. Order:
  A's items, then B's additions. Not lists: fallback.
- ``manual``: parked in the review queue; nothing is written for that field.

The fallback itself is ``manual`` or ``prefer: a|b`` (rules that always decide
or park), so escalation never loops. Every settlement says why, in words that
go to the sync history.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from tidesync.sync.record import Agreed, Seen, same

RULE_KINDS: Final = ("lww", "prefer", "non_null", "max", "min", "sum", "union", "manual")


@dataclass(frozen=True, slots=True)
class Rule:
    kind: str
    side: str | None = None  # for ``prefer``

    def __str__(self) -> str:
        return f"prefer:{self.side}" if self.kind == "prefer" else self.kind

    @classmethod
    def parse(cls, text: str) -> Rule:
        """``lww``, ``prefer:a``, ``prefer: b``, ``manual`` ... ; ValueError names the known rules."""
        kind, _, side = text.replace(" ", "").partition(":")
        if kind not in RULE_KINDS:
            raise ValueError(f"unknown rule {text!r}; rules: lww, prefer: a, prefer: b, {', '.join(RULE_KINDS[2:])}")
        if kind == "prefer":
            if side not in ("a", "b"):
                raise ValueError(f"rule {text!r}: prefer needs a side, a or b")
            return cls(kind, side)
        if side:
            raise ValueError(f"rule {text!r} takes no argument")
        return cls(kind)


MANUAL: Final = Rule("manual")


@dataclass(frozen=True, slots=True)
class Rules:
    """The rules of one sync: a record default, per-field rules, the fallback, the LWW skew bound and tie side."""

    default: Rule = Rule("lww")
    fields: Mapping[str, Rule] = field(default_factory=dict)
    fallback: Rule = MANUAL
    skew: float = 1.0
    tie: str = "a"

    def for_field(self, name: str) -> Rule:
        return self.fields.get(name, self.default)

    def with_overrides(self, overrides: Mapping[str, Rule]) -> Rules:
        if not overrides:
            return self
        return Rules(self.default, {**self.fields, **overrides}, self.fallback, self.skew, self.tie)


@dataclass(frozen=True, slots=True)
class Settlement:
    """The outcome of a rule: ``value`` and ``winner`` (``a``, ``b`` or ``merge``), or ``parked``."""

    rule: str  # the rule that decided, e.g. ``lww`` or ``lww -> manual``
    why: str
    value: Any = None
    winner: str = ""
    parked: bool = False


def settle(rule: Rule, rules: Rules, shadow: Agreed | None, a: Seen, b: Seen) -> Settlement:
    """Settle one conflicting field. ``a`` and ``b`` differ from each other (and from the shadow)."""
    return _apply(rule, rules, shadow, a, b)


def _escalate(rule: Rule, rules: Rules, shadow: Agreed | None, a: Seen, b: Seen, why: str) -> Settlement:
    fb = rules.fallback
    s = _apply(fb, rules, shadow, a, b)
    return Settlement(f"{rule} -> {fb}", f"{why}; {s.why}", s.value, s.winner, s.parked)


def _take(rule: Rule | str, side: str, a: Seen, b: Seen, why: str) -> Settlement:
    return Settlement(str(rule), why, (a if side == "a" else b).value, side)


def _apply(rule: Rule, rules: Rules, shadow: Agreed | None, a: Seen, b: Seen) -> Settlement:
    k = rule.kind
    if k == "manual":
        return Settlement("manual", "parked for review", parked=True)
    if k == "prefer":
        assert rule.side is not None
        return _take(rule, rule.side, a, b, f"{rule.side.upper()} is the source of truth for this field")
    if k == "lww":
        return _lww(rule, rules, shadow, a, b)
    if k == "non_null":
        ea, eb = _empty(a.value), _empty(b.value)
        if ea and not eb:
            return _take(rule, "b", a, b, "B has a value, A is empty")
        if eb and not ea:
            return _take(rule, "a", a, b, "A has a value, B is empty")
        return _escalate(rule, rules, shadow, a, b, "both empty" if ea else "both have a value")
    if k in ("max", "min"):
        return _extreme(rule, rules, shadow, a, b)
    if k == "sum":
        return _sum(rule, rules, shadow, a, b)
    if k == "union":
        return _union(rule, rules, shadow, a, b)
    raise ValueError(f"unknown rule {rule}")


def _lww(rule: Rule, rules: Rules, shadow: Agreed | None, a: Seen, b: Seen) -> Settlement:
    if a.at <= 0 or b.at <= 0:
        return _escalate(rule, rules, shadow, a, b, "a commit time is unknown")
    gap = a.at - b.at
    if rules.skew > 0 and abs(gap) < rules.skew:
        return _escalate(
            rule, rules, shadow, a, b, f"edits {abs(gap):.3f}s apart, within the clock-skew bound of {rules.skew:g}s"
        )
    if gap == 0:
        return _take(rule, rules.tie, a, b, f"same commit time; ties go to {rules.tie.upper()}")
    side = "a" if gap > 0 else "b"
    return _take(rule, side, a, b, f"{side.upper()}'s edit is {abs(gap):.3f}s later")


def _empty(v: Any) -> bool:
    return v is None or (isinstance(v, (str, list, tuple, dict, set, frozenset)) and len(v) == 0)


def _extreme(rule: Rule, rules: Rules, shadow: Agreed | None, a: Seen, b: Seen) -> Settlement:
    if a.value is None:
        return _take(rule, "b", a, b, "A has no value")
    if b.value is None:
        return _take(rule, "a", a, b, "B has no value")
    try:
        a_wins = a.value > b.value if rule.kind == "max" else a.value < b.value
    except TypeError:
        return _escalate(rule, rules, shadow, a, b, "the values cannot be compared")
    side = "a" if a_wins else "b"
    return _take(rule, side, a, b, f"{side.upper()} has the {'larger' if rule.kind == 'max' else 'smaller'} value")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float, Decimal)) and not isinstance(v, bool)


def _sum(rule: Rule, rules: Rules, shadow: Agreed | None, a: Seen, b: Seen) -> Settlement:
    if shadow is None:
        return _escalate(rule, rules, shadow, a, b, "no agreed value yet, so the deltas are unknown")
    s = 0 if shadow.value is None else shadow.value
    av = 0 if a.value is None else a.value
    bv = 0 if b.value is None else b.value
    if not (_number(s) and _number(av) and _number(bv)):
        return _escalate(rule, rules, shadow, a, b, "not numbers")
    try:
        merged = s + (av - s) + (bv - s)
    except TypeError:  # Decimal with float
        return _escalate(rule, rules, shadow, a, b, "numbers of incompatible types")
    return Settlement(str(rule), f"both deltas added: {s} {_signed(av - s)} (A) {_signed(bv - s)} (B)", merged, "merge")


def _signed(x: Any) -> str:
    return f"+ {x}" if x >= 0 else f"- {-x}"


def _as_list(v: Any) -> list[Any] | None:
    if v is None:
        return []
    if isinstance(v, (list, tuple)):
        return list(v)
    if isinstance(v, (set, frozenset)):
        return sorted(v, key=repr)
    return None


def _has(items: list[Any], x: Any) -> bool:
    return any(same(x, y) for y in items)


def _union(rule: Rule, rules: Rules, shadow: Agreed | None, a: Seen, b: Seen) -> Settlement:
    la, lb = _as_list(a.value), _as_list(b.value)
    base = _as_list(shadow.value) if shadow is not None else []
    if la is None or lb is None or base is None:
        return _escalate(rule, rules, shadow, a, b, "not lists")
    removed = [x for x in base if not _has(la, x) or not _has(lb, x)]
    out: list[Any] = []
    for x in [*la, *lb]:
        if not _has(removed, x) and not _has(out, x):
            out.append(x)
    added = len([x for x in out if not _has(base, x)])
    return Settlement(str(rule), f"three-way union: {added} item(s) added, {len(removed)} removed", out, "merge")
