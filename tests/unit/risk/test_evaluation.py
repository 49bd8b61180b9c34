"""Assessment: which rules fire, which decides (block > require_3ds > allow > review), the score, the explanation."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.domain.execution import PaymentRail
from billing.domain.money import Money
from billing.rails.ports import ChargeInitiator
from billing.risk.attributes import RiskFacts
from billing.risk.evaluation import Assessment, assess, transaction_risk_exemption_eligible
from billing.risk.rules import Action, RuleSet, parse_rule_set
from tests.unit.risk.facts import charge, make_facts

FIRES = {"attribute": "rail", "op": "eq", "value": "card"}
NEVER_FIRES = {"attribute": "rail", "op": "eq", "value": "sepa_debit"}
UNKNOWN = {"attribute": "instrument_age_seconds", "op": "lt", "value": 86400}


def rule(
    rule_id: str,
    action: str,
    when: dict[str, Any],
    score: int = 10,
    initiator: str = "any",
    rails: tuple[str, ...] = ("card",),
) -> dict[str, Any]:
    return {
        "id": rule_id,
        "description": rule_id,
        "action": action,
        "score": score,
        "applies_to": {"initiator": initiator, "rails": list(rails)},
        "when": when,
    }


def rule_set(*rules: dict[str, Any], version: int = 1) -> RuleSet:
    return parse_rule_set({"rules": list(rules)}, version=version)


def fires(when: dict[str, Any], facts: RiskFacts) -> bool:
    return bool(assess(rule_set(rule("r", "review", when)), facts).fired)


# --- Operators on each attribute type ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value", "amount", "expected"),
    [
        ("gte", {"EUR": 3000}, 3000, True),
        ("gte", {"EUR": 3000}, 2999, False),
        ("gt", {"EUR": 3000}, 3000, False),
        ("gt", {"EUR": 3000}, 3001, True),
        ("lt", {"EUR": 3000}, 2999, True),
        ("lt", {"EUR": 3000}, 3000, False),
        ("lte", {"EUR": 3000}, 3000, True),
        ("lte", {"EUR": 3000}, 3001, False),
        ("eq", {"EUR": 3000}, 3000, True),
        ("eq", {"EUR": 3000}, 3001, False),
        ("ne", {"EUR": 3000}, 3001, True),
        ("ne", {"EUR": 3000}, 3000, False),
    ],
)
def test_money_operators_compare_minor_units_of_the_charge_currency(
    op: str, value: dict[str, int], amount: int, expected: bool
) -> None:
    assert fires({"attribute": "amount", "op": op, "value": value}, charge(amount, "EUR")) is expected


@pytest.mark.parametrize("op", ["gte", "lt", "ne"])
def test_money_in_a_currency_the_map_does_not_name_never_fires_even_negated(op: str) -> None:
    comparison = {"attribute": "amount", "op": op, "value": {"EUR": 3000}}
    usd = charge(1_000_000, "USD")
    assert not fires(comparison, usd)
    assert not fires({"not": comparison}, usd)


def test_money_thresholds_are_never_converted_between_currencies() -> None:
    # 3000 minor units: 30.00 EUR but 3000 JPY (about 18 EUR); the JPY entry is what a JPY charge meets.
    thresholds = {"attribute": "amount", "op": "gte", "value": {"EUR": 3000, "JPY": 4500}}
    assert not fires(thresholds, charge(3000, "JPY"))
    assert fires(thresholds, charge(4500, "JPY"))


def test_customer_amount_total_is_compared_like_the_amount() -> None:
    total = {"attribute": "amount_per_customer_24h", "op": "gt", "value": {"GBP": 100000}}
    assert fires(total, charge(5000, "GBP", amount_per_customer_24h=Money(100001, "GBP")))
    assert not fires(total, charge(5000, "GBP", amount_per_customer_24h=Money(100000, "GBP")))


@pytest.mark.parametrize(
    ("op", "value", "count", "expected"),
    [
        ("gt", 5, 6, True),
        ("gt", 5, 5, False),
        ("gte", 6, 6, True),
        ("gte", 6, 5, False),
        ("lt", 2, 1, True),
        ("lt", 2, 2, False),
        ("lte", 2, 2, True),
        ("lte", 2, 3, False),
        ("eq", 3, 3, True),
        ("eq", 3, 4, False),
        ("ne", 3, 4, True),
        ("ne", 3, 3, False),
        ("in", [2, 3], 3, True),
        ("in", [2, 3], 4, False),
        ("not_in", [2, 3], 4, True),
        ("not_in", [2, 3], 2, False),
    ],
)
def test_integer_operators(op: str, value: Any, count: int, expected: bool) -> None:
    comparison = {"attribute": "attempts_per_customer_1h", "op": op, "value": value}
    assert fires(comparison, make_facts(attempts_per_customer_1h=count)) is expected


@pytest.mark.parametrize(
    ("op", "authenticated", "expected"),
    [("is_true", True, True), ("is_true", False, False), ("is_false", False, True), ("is_false", True, False)],
)
def test_boolean_operators(op: str, authenticated: bool, expected: bool) -> None:
    comparison = {"attribute": "first_charge_authenticated", "op": op}
    assert fires(comparison, make_facts(first_charge_authenticated=authenticated)) is expected


@pytest.mark.parametrize(
    ("attribute", "op", "value", "facts", "expected"),
    [
        ("initiator", "eq", "merchant", make_facts(initiator=ChargeInitiator.MERCHANT), True),
        ("initiator", "eq", "merchant", make_facts(), False),
        ("initiator", "ne", "merchant", make_facts(), True),
        ("initiator", "ne", "customer", make_facts(), False),
        ("rail", "in", ["card", "ach_debit"], make_facts(), True),
        ("rail", "in", ["sepa_debit"], make_facts(), False),
        ("rail", "not_in", ["sepa_debit"], make_facts(), True),
        ("rail", "not_in", ["card"], make_facts(), False),
        ("issuer_country", "eq", "DE", make_facts(), True),
        ("issuer_country", "eq", "FR", make_facts(), False),
        ("issuer_country", "ne", "FR", make_facts(), True),
        ("issuer_country", "ne", "DE", make_facts(), False),
        ("customer_country", "in", ["AT", "DE"], make_facts(), True),
        ("customer_country", "in", ["AT"], make_facts(), False),
        ("customer_country", "not_in", ["AT"], make_facts(), True),
        ("customer_country", "not_in", ["DE"], make_facts(), False),
    ],
)
def test_enum_and_country_operators(attribute: str, op: str, value: Any, facts: RiskFacts, expected: bool) -> None:
    rails = ("card", "sepa_debit", "ach_debit")
    when = {"attribute": attribute, "op": op, "value": value}
    assert bool(assess(rule_set(rule("r", "review", when, rails=rails)), facts).fired) is expected


@pytest.mark.parametrize("op", ["is_true", "is_false"])
def test_an_unknown_boolean_is_neither_true_nor_false(op: str) -> None:
    assert not fires({"attribute": "issuer_country_differs", "op": op}, make_facts(customer_country=None))


# --- Three-valued conditions -------------------------------------------------------------------------------------

NO_AGE = make_facts(instrument_age_seconds=None)


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ({"not": UNKNOWN}, False),
        ({"all_of": [UNKNOWN, FIRES]}, False),
        ({"all_of": [UNKNOWN, NEVER_FIRES]}, False),
        ({"not": {"all_of": [UNKNOWN, NEVER_FIRES]}}, True),  # false, whatever the unknown part holds
        ({"not": {"all_of": [UNKNOWN, FIRES]}}, False),
        ({"any_of": [UNKNOWN, FIRES]}, True),  # true, whatever the unknown part holds
        ({"any_of": [UNKNOWN, NEVER_FIRES]}, False),
        ({"not": {"any_of": [UNKNOWN, NEVER_FIRES]}}, False),
        ({"all_of": [FIRES, {"not": NEVER_FIRES}]}, True),
    ],
)
def test_unknown_values_never_fire_a_rule_unless_the_known_parts_decide(when: dict[str, Any], expected: bool) -> None:
    assert fires(when, NO_AGE) is expected


# --- Which rules are evaluated -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("initiator", "rails", "facts", "evaluated"),
    [
        ("customer", ("card",), make_facts(), True),
        ("customer", ("card",), make_facts(initiator=ChargeInitiator.MERCHANT), False),
        ("merchant", ("card",), make_facts(initiator=ChargeInitiator.MERCHANT), True),
        ("merchant", ("card",), make_facts(), False),
        ("any", ("card",), make_facts(initiator=ChargeInitiator.MERCHANT), True),
        ("any", ("sepa_debit",), make_facts(), False),
        ("any", ("sepa_debit", "card"), make_facts(), True),
        ("any", ("card",), make_facts(rail=PaymentRail.ACH_DEBIT), False),
    ],
)
def test_applies_to_selects_the_charges_a_rule_is_evaluated_for(
    initiator: str, rails: tuple[str, ...], facts: RiskFacts, evaluated: bool
) -> None:
    always = {"attribute": "attempts_per_tenant_1m", "op": "gte", "value": 1}
    assessment = assess(rule_set(rule("r", "block", always, initiator=initiator, rails=rails)), facts)
    assert (assessment.decision is Action.BLOCK) is evaluated
    assert bool(assessment.fired) is evaluated


# --- Decision order ----------------------------------------------------------------------------------------------


def decide(*actions: str, authenticated: bool = False) -> Action:
    rules = [rule(f"r{i}", action, FIRES) for i, action in enumerate(actions)]
    return assess(rule_set(*rules), make_facts(), authenticated=authenticated).decision


def test_nothing_firing_allows() -> None:
    assessment = assess(rule_set(rule("r", "block", NEVER_FIRES)), make_facts())
    assert (assessment.decision, assessment.score, assessment.fired) == (Action.ALLOW, 0, ())


def test_block_wins_over_every_other_action_3ds_and_allow_included() -> None:
    assert decide("allow", "require_3ds", "review", "block") is Action.BLOCK
    assert decide("block", "allow") is Action.BLOCK


def test_require_3ds_is_not_waived_by_an_allow_rule_nor_delayed_by_review() -> None:
    assert decide("allow", "require_3ds") is Action.REQUIRE_3DS
    assert decide("review", "require_3ds") is Action.REQUIRE_3DS


def test_allow_skips_review() -> None:
    assert decide("review", "allow") is Action.ALLOW
    assert decide("review") is Action.REVIEW


def test_once_authenticated_3ds_rules_are_satisfied_and_the_others_decide() -> None:
    assert decide("require_3ds", authenticated=True) is Action.ALLOW
    assert decide("require_3ds", "review", authenticated=True) is Action.REVIEW
    assert decide("require_3ds", "block", authenticated=True) is Action.BLOCK
    assessment = assess(rule_set(rule("sca", "require_3ds", FIRES)), make_facts(), authenticated=True)
    assert [fired.rule_id for fired in assessment.fired] == ["sca"]


actions = st.sampled_from([action.value for action in Action])
candidate_rules = st.lists(st.tuples(actions, st.booleans(), st.integers(0, 100)), max_size=12)


@given(candidate_rules)
def test_decision_and_score_follow_from_the_rules_that_fired(candidates: list[tuple[str, bool, int]]) -> None:
    rules = [
        rule(f"r{i}", action, FIRES if firing else NEVER_FIRES, score=score)
        for i, (action, firing, score) in enumerate(candidates)
    ]
    assessment = assess(rule_set(*rules), make_facts())
    fired = [(f"r{i}", Action(action), score) for i, (action, firing, score) in enumerate(candidates) if firing]
    fired_actions = {action for _, action, _ in fired}
    assert [(f.rule_id, f.action, f.score) for f in assessment.fired] == fired
    assert assessment.score == min(100, sum(score for _, _, score in fired))
    if Action.BLOCK in fired_actions:
        assert assessment.decision is Action.BLOCK
    elif Action.REQUIRE_3DS in fired_actions:
        assert assessment.decision is Action.REQUIRE_3DS
    elif Action.ALLOW in fired_actions:
        assert assessment.decision is Action.ALLOW
    else:
        assert assessment.decision is (Action.REVIEW if Action.REVIEW in fired_actions else Action.ALLOW)


# --- Score and explanation ---------------------------------------------------------------------------------------


def test_score_sums_the_weights_of_fired_rules_only_and_caps_at_100() -> None:
    two = rule_set(
        rule("a", "review", FIRES, score=30),
        rule("b", "review", FIRES, score=25),
        rule("c", "review", NEVER_FIRES, score=40),
    )
    assert assess(two, make_facts()).score == 55
    many = rule_set(*[rule(f"r{i}", "review", FIRES, score=60) for i in range(3)])
    assert assess(many, make_facts()).score == 100


def test_fired_rules_carry_what_their_condition_read_money_as_minor_units() -> None:
    when = {
        "all_of": [
            {"attribute": "amount", "op": "gte", "value": {"JPY": 4500}},
            {
                "any_of": [
                    {"attribute": "issuer_country_differs", "op": "is_true"},
                    {"attribute": "attempts_per_ip_1h", "op": "gt", "value": 2},
                ]
            },
        ]
    }
    facts = charge(4500, "JPY", issuer_country="US", customer_country="JP", attempts_per_ip_1h=1)
    assessment = assess(rule_set(rule("r", "review", when, score=35), version=9), facts)
    (fired,) = assessment.fired
    assert dict(fired.inputs) == {
        "amount": {"amount": 4500, "currency": "JPY"},
        "issuer_country_differs": True,
        "issuer_country": "US",
        "customer_country": "JP",
        "attempts_per_ip_1h": 1,
    }
    assert assessment.rule_set_version == 9
    assert assessment.fired_json() == [
        {"rule_id": "r", "action": "review", "score": 35, "inputs": dict(fired.inputs)},
    ]


def test_unknown_inputs_are_reported_as_null() -> None:
    when = {"any_of": [FIRES, UNKNOWN]}
    (fired,) = assess(rule_set(rule("r", "review", when)), NO_AGE).fired
    assert dict(fired.inputs) == {"rail": "card", "instrument_age_seconds": None}


# --- Transaction risk analysis exemption -------------------------------------------------------------------------


def assessment_of(decision: Action, score: int) -> Assessment:
    return Assessment(decision=decision, score=score, fired=(), rule_set_version=0)


@pytest.mark.parametrize(
    ("decision", "score", "threshold", "eligible"),
    [
        (Action.ALLOW, 0, 20, True),
        (Action.REQUIRE_3DS, 19, 20, True),
        (Action.REQUIRE_3DS, 20, 20, False),
        (Action.ALLOW, 0, 0, False),
        (Action.REVIEW, 0, 100, False),
        (Action.BLOCK, 0, 100, False),
    ],
)
def test_tra_exemption_needs_a_score_below_the_threshold_and_no_block_or_review(
    decision: Action, score: int, threshold: int, eligible: bool
) -> None:
    assert transaction_risk_exemption_eligible(assessment_of(decision, score), threshold) is eligible


@pytest.mark.parametrize("threshold", [-1, 101, 20.0, True])
def test_tra_threshold_outside_0_to_100_is_a_programming_error(threshold: Any) -> None:
    with pytest.raises(ValueError, match="threshold"):
        transaction_risk_exemption_eligible(assessment_of(Action.ALLOW, 0), threshold)
