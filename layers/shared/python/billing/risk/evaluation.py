"""Assessing one charge: which rules fire, the decision they lead to, the score, and what each rule read.

Every rule that applies to the charge (its initiator and rail) is evaluated; none stops the others, so the
explanation lists every rule that fired, whichever decided. The decision is then the highest of the actions that
fired, in this order (DECISION_PRECEDENCE):

1. block: a block that fires wins over everything, 3-D Secure and allow rules included. Stripe Radar lets an allow
   rule skip its block rules; here no rule can whitelist past a block (card testing, repeated declines): narrow the
   block rule's condition instead.
2. require_3ds: as in Radar, 3-D Secure rules come before allow rules, so an allow rule does not waive
   authentication; nor does a review rule delay it. Once the customer authenticated (assess(..., authenticated=True))
   they are satisfied: they still fire and score, but the decision comes from the rules below, as Radar evaluates
   its other rules on the authenticated payment.
3. allow: an allow rule that fires skips the review rules (Radar's order).
4. review.
5. Nothing fired (or only satisfied 3-D Secure rules): allow.

Conditions have three values: a comparison with an unknown value (None, or a currency missing from a money map) is
unknown; all_of is false if any part is false, else unknown if any is unknown; any_of is true if any part is true,
else unknown if any is unknown; not of unknown is unknown. A rule fires only on true, so missing data never fires a
rule, not even through a `not`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, assert_never

from pydantic import JsonValue

from billing.domain.money import Money
from billing.rails.ports import ChargeInitiator
from billing.risk.attributes import ATTRIBUTE_SPECS, Attribute, AttributeValue, RenderedValue, RiskFacts
from billing.risk.attributes import render as render_value
from billing.risk.rules import (
    Action,
    AllOf,
    AnyOf,
    Comparison,
    InitiatorScope,
    Not,
    Operator,
    Rule,
    RuleSet,
)

MAX_SCORE: Final = 100
DECISION_PRECEDENCE: Final = (Action.BLOCK, Action.REQUIRE_3DS, Action.ALLOW, Action.REVIEW)


@dataclass(frozen=True, slots=True)
class FiredRule:
    """A rule that fired, with the value of every attribute its condition reads (derived ones with their sources)."""

    rule_id: str
    action: Action
    score: int
    inputs: Mapping[str, RenderedValue]

    def as_json(self) -> dict[str, Any]:
        return {"rule_id": self.rule_id, "action": self.action.value, "score": self.score, "inputs": dict(self.inputs)}


@dataclass(frozen=True, slots=True)
class Assessment:
    """The outcome for one charge.

    score = min(100, sum of the weights of every rule that fired), whatever their action and whichever decided: a
    risk measure beside the decision, which the 3-D Secure exemption uses (transaction_risk_exemption_eligible).
    """

    decision: Action
    score: int
    fired: tuple[FiredRule, ...]
    rule_set_version: int

    def fired_json(self) -> list[dict[str, Any]]:
        """The fired rules as billing.risk_assessments.fired stores them."""
        return [rule.as_json() for rule in self.fired]


def assess(rule_set: RuleSet, facts: RiskFacts, *, authenticated: bool = False) -> Assessment:
    """Evaluate every applicable rule on the facts; `authenticated`: this attempt already passed 3-D Secure."""
    fired = tuple(
        FiredRule(rule.id, rule.action, rule.score, _inputs(rule, facts))
        for rule in rule_set.rules
        if _applies(rule, facts) and _evaluate(rule.when, facts) is True
    )
    deciding = {rule.action for rule in fired if not (authenticated and rule.action is Action.REQUIRE_3DS)}
    decision = next((action for action in DECISION_PRECEDENCE if action in deciding), Action.ALLOW)
    return Assessment(
        decision=decision,
        score=min(MAX_SCORE, sum(rule.score for rule in fired)),
        fired=fired,
        rule_set_version=rule_set.version,
    )


def transaction_risk_exemption_eligible(assessment: Assessment, threshold: int) -> bool:
    """Whether the risk side of PSD2's transaction risk analysis exemption (RTS on SCA, art. 18) holds.

    True when the decision is allow or require_3ds (no rule blocked the charge or sent it to review) and the score
    is below the tenant's threshold (0 never exempts). The exemption's amount ceiling, which depends on the
    acquirer's fraud rate, is the 3-D Secure flow's to check; so is whether the issuer accepts it.
    """
    if type(threshold) is not int or not 0 <= threshold <= MAX_SCORE:
        raise ValueError(f"threshold must be an int from 0 to {MAX_SCORE}")
    return assessment.decision in (Action.ALLOW, Action.REQUIRE_3DS) and assessment.score < threshold


def _applies(rule: Rule, facts: RiskFacts) -> bool:
    if facts.rail not in rule.applies_to.rails:
        return False
    match rule.applies_to.initiator:
        case InitiatorScope.ANY:
            return True
        case InitiatorScope.CUSTOMER:
            return facts.initiator is ChargeInitiator.CUSTOMER
        case InitiatorScope.MERCHANT:
            return facts.initiator is ChargeInitiator.MERCHANT
        case _:
            assert_never(rule.applies_to.initiator)


def _evaluate(condition: Comparison | AllOf | AnyOf | Not, facts: RiskFacts) -> bool | None:
    match condition:
        case Comparison():
            return _compare(condition, facts.value(condition.attribute))
        case AllOf(all_of=parts):
            results = [_evaluate(part, facts) for part in parts]
            if any(result is False for result in results):
                return False
            return None if None in results else True
        case AnyOf(any_of=parts):
            results = [_evaluate(part, facts) for part in parts]
            if any(result is True for result in results):
                return True
            return None if None in results else False
        case Not(negated=part):
            result = _evaluate(part, facts)
            return None if result is None else not result
        case _:
            assert_never(condition)


def _compare(comparison: Comparison, actual: AttributeValue) -> bool | None:
    expected = comparison.value
    if actual is None:
        return None
    if isinstance(actual, Money):
        # Per-currency thresholds: only the charge's own currency is read, never converted.
        threshold = expected.get(actual.currency) if isinstance(expected, dict) else None
        return _order(comparison.op, actual.amount, threshold)
    match comparison.op:
        case Operator.IS_TRUE:
            return actual is True
        case Operator.IS_FALSE:
            return actual is False
        case Operator.EQ:
            return actual == expected
        case Operator.NE:
            return actual != expected
        case Operator.IN:
            return isinstance(expected, list) and actual in expected
        case Operator.NOT_IN:
            return isinstance(expected, list) and actual not in expected
        case Operator.GT | Operator.GTE | Operator.LT | Operator.LTE:
            return _order(comparison.op, actual, expected) if type(actual) is int else None
        case _:
            assert_never(comparison.op)


def _order(op: Operator, actual: int, expected: JsonValue) -> bool | None:
    # parse_rule_set guarantees an int where one is compared with; anything else (a currency the map lacks) is
    # unknown rather than an error in the middle of a charge.
    if type(expected) is not int:
        return None
    match op:
        case Operator.GT:
            return actual > expected
        case Operator.GTE:
            return actual >= expected
        case Operator.LT:
            return actual < expected
        case Operator.LTE:
            return actual <= expected
        case Operator.EQ:
            return actual == expected
        case Operator.NE:
            return actual != expected
        case _:
            return None


def _inputs(rule: Rule, facts: RiskFacts) -> Mapping[str, RenderedValue]:
    read: dict[str, RenderedValue] = {}
    for attribute in _attributes_read(rule.when):
        for shown in (attribute, *ATTRIBUTE_SPECS[attribute].derived_from):
            read.setdefault(shown.value, render_value(facts.value(shown)))
    return MappingProxyType(read)


def _attributes_read(condition: Comparison | AllOf | AnyOf | Not) -> Iterator[Attribute]:
    match condition:
        case Comparison():
            yield condition.attribute
        case AllOf(all_of=parts) | AnyOf(any_of=parts):
            for part in parts:
                yield from _attributes_read(part)
        case Not(negated=part):
            yield from _attributes_read(part)
        case _:
            assert_never(condition)
