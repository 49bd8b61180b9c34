"""The rule format: a tenant's versioned rule set, each rule a condition on named attributes, an action and a weight.

A rule set as a client sends it and billing.risk_rule_sets.rules stores it (RuleSetBody; the version is assigned by
storage, never sent):

    {"rules": [{"id": "sca-amount", "description": "...", "action": "require_3ds", "score": 0,
                "applies_to": {"initiator": "customer", "rails": ["card"]},
                "when": {"attribute": "amount", "op": "gte", "value": {"EUR": 3000, "JPY": 4500}}}]}

A condition is a comparison {attribute, op, value} or a group: {"all_of": [...]}, {"any_of": [...]}, {"not": {...}}.
Which operators and values fit an attribute depends on its type (OPERATORS):

- money (amount, amount_per_customer_24h): gt gte lt lte eq ne against a map of currency to integer minor units in
  that currency's exponent ({"EUR": 3000} is 30.00 EUR, {"JPY": 4500} is 4500 JPY). Nothing is converted: a charge
  in a currency the map does not name makes the comparison unknown, so the rule does not fire. There is no
  "default" entry on purpose: 3000 minor units are 30 EUR but 30 KWD (about 90 EUR) or 3000 JPY (about 18 EUR).
- integer (ages, counters): gt gte lt lte eq ne against an integer; in, not_in against a list of them.
- boolean: is_true, is_false, with no value.
- enum (rail, initiator) and country (ISO 3166-1 alpha-2): eq ne against one value; in, not_in against a list.

parse_rule_set is the one way in (API bodies and stored rows alike): pydantic checks the shape, then the checks that
span fields (operator against attribute, value against type, unique ids, depth) run with the exact path of what is
wrong, so a refused rule set answers 422 naming every field, and nothing is stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    Strict,
    StrictInt,
    StrictStr,
    Tag,
    WithJsonSchema,
    field_validator,
)
from pydantic import ValidationError as PydanticValidationError

from billing.domain.errors import FieldError, ValidationFailed
from billing.domain.execution import UNSTORABLE_CHARACTER, PaymentRail, looks_like_card_number
from billing.domain.money import MAX_AMOUNT_MINOR, is_known_currency
from billing.risk.attributes import ATTRIBUTE_SPECS, COUNTRY_PATTERN, Attribute, AttributeType

# Bounds keep one assessment's work small (at most MAX_RULES x MAX_CONDITIONS_PER_RULE comparisons, all in memory)
# and a rule set readable by the person who reviews it.
MAX_RULES: Final = 50
MAX_CONDITION_DEPTH: Final = 4  # a comparison directly under `when` is depth 1; each group adds one
MAX_CONDITIONS_PER_RULE: Final = 50  # comparisons and groups together
MAX_GROUP_SIZE: Final = 20
MAX_LIST_VALUES: Final = 100
MAX_DESCRIPTION_LENGTH: Final = 500
# Counters and ages fit a PostgreSQL integer; 2^31 - 1 seconds is 68 years.
MAX_INTEGER_VALUE: Final = 2**31 - 1
RULE_ID_PATTERN: Final = r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$"
MAX_RULE_ID_LENGTH: Final = 64

# JSON has only strings for enums and arrays for tuples: those fields accept them (strict mode wants instances);
# every scalar stays strict, so 30.0 is never an int and "1" never a number.
_FromJson = Strict(False)


class Action(StrEnum):
    """What a rule does when it fires; also the assessment's decision (the action that won)."""

    REQUIRE_3DS = "require_3ds"
    ALLOW = "allow"
    BLOCK = "block"
    REVIEW = "review"


class Operator(StrEnum):
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"
    EQ = "eq"
    NE = "ne"
    IN = "in"
    NOT_IN = "not_in"
    IS_TRUE = "is_true"
    IS_FALSE = "is_false"


_ORDERING = frozenset({Operator.GT, Operator.GTE, Operator.LT, Operator.LTE, Operator.EQ, Operator.NE})
_EQUALITY = frozenset({Operator.EQ, Operator.NE})
_MEMBERSHIP = frozenset({Operator.IN, Operator.NOT_IN})
_TRUTH = frozenset({Operator.IS_TRUE, Operator.IS_FALSE})
OPERATORS: Final = {
    AttributeType.MONEY: _ORDERING,
    AttributeType.INTEGER: _ORDERING | _MEMBERSHIP,
    AttributeType.BOOLEAN: _TRUTH,
    AttributeType.ENUM: _EQUALITY | _MEMBERSHIP,
    AttributeType.COUNTRY: _EQUALITY | _MEMBERSHIP,
}


class InitiatorScope(StrEnum):
    """Which charges a rule applies to by who started them."""

    CUSTOMER = "customer"
    MERCHANT = "merchant"
    ANY = "any"


_MODEL_CONFIG = ConfigDict(extra="forbid", frozen=True, strict=True)

_VALUE_SCHEMA: Final[dict[str, Any]] = {
    "description": (
        "money: an object of ISO 4217 code to integer minor units; integer: an integer; enum or country: a string; "
        "in / not_in: an array of these; is_true / is_false: absent"
    ),
    "oneOf": [
        {"type": "integer", "minimum": 0},
        {"type": "string"},
        {"type": "array", "items": {"type": ["integer", "string"]}, "minItems": 1, "maxItems": MAX_LIST_VALUES},
        {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}, "minProperties": 1},
    ],
}


class Comparison(BaseModel):
    """One attribute tested against a value. An unknown attribute value (None) or a currency missing from a money
    map makes the comparison unknown: it does not fire a rule, and neither does its `not`."""

    model_config = _MODEL_CONFIG

    attribute: Annotated[Attribute, _FromJson]
    op: Annotated[Operator, _FromJson]
    # Shape checked against the attribute's type by parse_rule_set, with the path of what is wrong.
    value: Annotated[JsonValue, WithJsonSchema(_VALUE_SCHEMA)] = None


class AllOf(BaseModel):
    model_config = _MODEL_CONFIG

    all_of: Annotated[tuple[Condition, ...], _FromJson, Field(min_length=1, max_length=MAX_GROUP_SIZE)]


class AnyOf(BaseModel):
    model_config = _MODEL_CONFIG

    any_of: Annotated[tuple[Condition, ...], _FromJson, Field(min_length=1, max_length=MAX_GROUP_SIZE)]


class Not(BaseModel):
    model_config = _MODEL_CONFIG

    negated: Condition = Field(alias="not")


# Tags are what pydantic puts in an error's location for the branch it tried; the angle brackets set them apart
# from field names so _location can drop them.
_TAGS: Final = {"attribute": "<comparison>", "all_of": "<all_of>", "any_of": "<any_of>", "not": "<not>"}
_TAG_OF_MODEL: Final[dict[type[BaseModel], str]] = {
    Comparison: "<comparison>",
    AllOf: "<all_of>",
    AnyOf: "<any_of>",
    Not: "<not>",
}


def _condition_kind(data: Any) -> str | None:
    if isinstance(data, dict):
        kinds = [tag for key, tag in _TAGS.items() if key in data]
        return kinds[0] if len(kinds) == 1 else None
    return _TAG_OF_MODEL.get(type(data))


Condition = Annotated[
    Annotated[Comparison, Tag("<comparison>")]
    | Annotated[AllOf, Tag("<all_of>")]
    | Annotated[AnyOf, Tag("<any_of>")]
    | Annotated[Not, Tag("<not>")],
    Discriminator(
        _condition_kind,
        custom_error_type="condition_shape",
        custom_error_message="a condition is an object with exactly one of: attribute, all_of, any_of, not",
    ),
]


for _group in (AllOf, AnyOf, Not):
    _group.model_rebuild()


class AppliesTo(BaseModel):
    """The charges a rule is evaluated for at all; for the others it is skipped (it neither fires nor scores)."""

    model_config = _MODEL_CONFIG

    initiator: Annotated[InitiatorScope, _FromJson]
    # Explicit, never "all rails": a rail added later must not fall under rules written before it existed.
    rails: Annotated[
        tuple[Annotated[PaymentRail, _FromJson], ...], _FromJson, Field(min_length=1, max_length=len(PaymentRail))
    ]


class Rule(BaseModel):
    model_config = _MODEL_CONFIG

    id: Annotated[StrictStr, Field(pattern=RULE_ID_PATTERN, max_length=MAX_RULE_ID_LENGTH)]
    description: Annotated[StrictStr, Field(min_length=1, max_length=MAX_DESCRIPTION_LENGTH)]
    action: Annotated[Action, _FromJson]
    score: Annotated[StrictInt, Field(ge=0, le=100, description="Weight added to the score when the rule fires")]
    applies_to: AppliesTo
    when: Condition


class UnavailableAuthentication(StrEnum):
    """What a charge does when the issuer could not authenticate (transStatus U): go on without liability shift, or
    fail with authentication_unavailable."""

    PROCEED = "proceed"
    FAIL = "fail"


# PSD2 transaction risk analysis (RTS on SCA, art. 18): the lowest band, for an acquirer fraud rate up to 0.13 %.
DEFAULT_TRA_CEILING: Final[dict[str, int]] = {"EUR": 10000}
DEFAULT_REVIEW_TIMEOUT_MINUTES: Final = 24 * 60


class RiskSettings(BaseModel):
    """A tenant's choices beside its rules: how long a review may wait, what an unavailable authentication does,
    and when the transaction risk analysis exemption is claimed (score below the threshold, amount up to the ceiling
    in the charge's own currency; threshold 0 never claims it)."""

    model_config = _MODEL_CONFIG

    review_timeout_minutes: Annotated[StrictInt, Field(ge=5, le=7 * 24 * 60)] = DEFAULT_REVIEW_TIMEOUT_MINUTES
    on_authentication_unavailable: Annotated[UnavailableAuthentication, _FromJson] = UnavailableAuthentication.PROCEED
    tra_score_threshold: Annotated[StrictInt, Field(ge=0, le=100)] = 0
    tra_ceiling: Annotated[
        dict[StrictStr, Annotated[StrictInt, Field(ge=0, le=MAX_AMOUNT_MINOR)]], Field(max_length=MAX_LIST_VALUES)
    ] = Field(default_factory=lambda: dict(DEFAULT_TRA_CEILING))

    @field_validator("tra_ceiling")
    @classmethod
    def _known_currencies(cls, ceiling: dict[str, int]) -> dict[str, int]:
        unknown = [code for code in ceiling if not is_known_currency(code)]
        if unknown:
            raise ValueError("tra_ceiling keys must be ISO 4217 currency codes")
        return ceiling


class RuleSetBody(BaseModel):
    """A rule set as a client sends it and storage keeps it: the rules, in the order explanations list them."""

    model_config = _MODEL_CONFIG

    rules: Annotated[tuple[Rule, ...], _FromJson, Field(max_length=MAX_RULES)]
    settings: RiskSettings = Field(default_factory=RiskSettings)


class RuleSet(BaseModel):
    """A validated rule set and its version (0: the engine's defaults; stored versions count from 1).

    Build it with parse_rule_set: constructing it directly skips the checks that span fields.
    """

    model_config = _MODEL_CONFIG

    version: Annotated[StrictInt, Field(ge=0)]
    rules: tuple[Rule, ...]
    settings: RiskSettings = Field(default_factory=RiskSettings)

    def document(self) -> dict[str, Any]:
        """The body as storage keeps it and the API returns it (without the version, which is the row's)."""
        return RuleSetBody(rules=self.rules, settings=self.settings).model_dump(
            mode="json", by_alias=True, exclude_none=True
        )

    def with_version(self, version: int) -> RuleSet:
        """The same rules under the version storage assigned when it kept them."""
        return RuleSet(version=version, rules=self.rules, settings=self.settings)

    def reads(self, attribute: Attribute) -> bool:
        """Whether a condition of any rule tests `attribute` (a counter no rule reads need not be counted)."""
        return any(_condition_reads(rule.when, attribute) for rule in self.rules)


def _condition_reads(condition: Comparison | AllOf | AnyOf | Not, attribute: Attribute) -> bool:
    match condition:
        case Comparison():
            return condition.attribute is attribute
        case AllOf():
            return any(_condition_reads(c, attribute) for c in condition.all_of)
        case AnyOf():
            return any(_condition_reads(c, attribute) for c in condition.any_of)
        case Not():
            return _condition_reads(condition.negated, attribute)


def parse_rule_set(data: object, *, version: int) -> RuleSet:
    """Validate a rule set body (decoded JSON); ValidationFailed names every wrong field by its dotted path."""
    try:
        body = RuleSetBody.model_validate(data)
    except PydanticValidationError as exc:
        errors = _field_errors(exc)
        # The checks that span fields still run on every rule whose shape is right: one answer lists all problems.
        errors += _rule_set_errors(_rules_that_parse(data))
        raise ValidationFailed(errors) from None
    errors = _rule_set_errors(enumerate(body.rules))
    if errors:
        raise ValidationFailed(errors)
    return RuleSet(version=version, rules=body.rules, settings=body.settings)


def rule_set_json_schema() -> dict[str, Any]:
    """JSON Schema of the body, for the OpenAPI document. It cannot say which operator fits which attribute: the
    server checks that (and answers 422 naming the field)."""
    return RuleSetBody.model_json_schema(by_alias=True)


def _field_errors(exc: PydanticValidationError) -> list[FieldError]:
    return [
        FieldError(_location(err["loc"]), err["type"], err["msg"])
        for err in exc.errors(include_url=False, include_input=False)
    ]


def _location(loc: tuple[int | str, ...]) -> str:
    # A card number may sit in a key of the input; it never reaches a response or a log line.
    path = ".".join(str(part) for part in loc if not (isinstance(part, str) and part in _TAG_OF_MODEL.values()))
    return "***" if looks_like_card_number(path) else (path or "body")


def _rules_that_parse(data: object) -> list[tuple[int, Rule]]:
    items = data.get("rules") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return []
    parsed: list[tuple[int, Rule]] = []
    for index, item in enumerate(items[:MAX_RULES]):
        try:
            parsed.append((index, Rule.model_validate(item)))
        except PydanticValidationError:
            continue  # already reported, with its path, by the whole body's validation
    return parsed


# --- The checks that span fields ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Node:
    condition: Comparison | AllOf | AnyOf | Not
    path: str
    depth: int


def _rule_set_errors(rules: Iterable[tuple[int, Rule]]) -> list[FieldError]:
    return list(_rule_errors(rules))


def _rule_errors(rules: Iterable[tuple[int, Rule]]) -> Iterator[FieldError]:
    seen: set[str] = set()
    for index, rule in rules:
        path = f"rules.{index}"
        if rule.id in seen:
            yield FieldError(f"{path}.id", "duplicate", f"rule id {rule.id!r} is used by an earlier rule")
        seen.add(rule.id)
        # Rules are stored as JSON that the database's card number guard reads value by value.
        if looks_like_card_number(rule.id):
            yield FieldError(f"{path}.id", "card_data", "looks like a card number; card data is never accepted")
        if looks_like_card_number(rule.description):
            yield FieldError(
                f"{path}.description", "card_data", "looks like a card number; card data is never accepted"
            )
        if UNSTORABLE_CHARACTER.search(rule.description):
            yield FieldError(f"{path}.description", "unstorable_character", "holds a NUL or a lone surrogate")
        rails = rule.applies_to.rails
        for position, rail in enumerate(rails):
            if rail in rails[:position]:
                yield FieldError(f"{path}.applies_to.rails.{position}", "duplicate", f"{rail} is listed twice")
        yield from _condition_errors(rule.when, f"{path}.when")


def _condition_errors(root: Comparison | AllOf | AnyOf | Not, root_path: str) -> Iterator[FieldError]:
    pending = [_Node(root, root_path, 1)]
    count = 0
    while pending:
        node = pending.pop()
        count += 1
        if node.depth > MAX_CONDITION_DEPTH:
            yield FieldError(node.path, "too_deep", f"conditions nest at most {MAX_CONDITION_DEPTH} levels deep")
            continue
        match node.condition:
            case Comparison() as comparison:
                yield from _comparison_errors(comparison, node.path)
            case AllOf(all_of=children):
                pending += [_Node(c, f"{node.path}.all_of.{i}", node.depth + 1) for i, c in enumerate(children)]
            case AnyOf(any_of=children):
                pending += [_Node(c, f"{node.path}.any_of.{i}", node.depth + 1) for i, c in enumerate(children)]
            case Not(negated=child):
                pending.append(_Node(child, f"{node.path}.not", node.depth + 1))
    if count > MAX_CONDITIONS_PER_RULE:
        yield FieldError(root_path, "too_many_conditions", f"a rule holds at most {MAX_CONDITIONS_PER_RULE} conditions")


def _comparison_errors(comparison: Comparison, path: str) -> Iterator[FieldError]:
    spec = ATTRIBUTE_SPECS[comparison.attribute]
    op, value, where = comparison.op, comparison.value, f"{path}.value"
    if op not in OPERATORS[spec.type]:
        allowed = ", ".join(sorted(OPERATORS[spec.type]))
        yield FieldError(
            f"{path}.op",
            "operator_not_applicable",
            f"{op} does not apply to {spec.type} attribute {comparison.attribute}; use one of {allowed}",
        )
        return
    if op in _TRUTH:
        # Present at all, null included: the JSON Schema says the same, and a null that meant something would not be
        # seen again once stored (documents omit absent values).
        if "value" in comparison.model_fields_set:
            yield FieldError(where, "value_not_allowed", f"{op} takes no value")
        return
    if value is None:
        yield FieldError(where, "value_required", f"{op} compares with a value")
        return
    if op in _MEMBERSHIP:
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_LIST_VALUES:
            yield FieldError(where, "list_required", f"{op} takes an array of 1 to {MAX_LIST_VALUES} values")
            return
        for position, item in enumerate(value):
            yield from _scalar_errors(spec.type, spec.choices, item, f"{where}.{position}")
            if item in value[:position]:
                yield FieldError(f"{where}.{position}", "duplicate", "listed twice")
        return
    if spec.type is AttributeType.MONEY:
        yield from _money_errors(value, where)
        return
    yield from _scalar_errors(spec.type, spec.choices, value, where)


def _scalar_errors(kind: AttributeType, choices: tuple[str, ...], value: JsonValue, where: str) -> Iterator[FieldError]:
    if kind is AttributeType.INTEGER:
        yield from _integer_errors(value, where, MAX_INTEGER_VALUE)
    elif kind is AttributeType.ENUM:
        if not isinstance(value, str) or value not in choices:
            yield FieldError(where, "not_a_choice", f"must be one of {', '.join(choices)}")
    elif not isinstance(value, str) or not COUNTRY_PATTERN.fullmatch(value):
        yield FieldError(where, "country_invalid", "must be an ISO 3166-1 alpha-2 code in upper case")


def _money_errors(value: JsonValue, where: str) -> Iterator[FieldError]:
    if not isinstance(value, dict) or not value:
        yield FieldError(
            where, "money_map_required", 'money compares with an object of currency to minor units, {"EUR": 3000}'
        )
        return
    for currency, amount in value.items():
        if not is_known_currency(currency):
            # A key is echoed in the path: shown only once it is known not to be card data.
            shown = "***" if looks_like_card_number(currency) else currency
            yield FieldError(f"{where}.{shown}", "unknown_currency", "must be an active ISO 4217 code in upper case")
            continue
        yield from _integer_errors(amount, f"{where}.{currency}", MAX_AMOUNT_MINOR)


def _integer_errors(value: JsonValue, where: str, maximum: int) -> Iterator[FieldError]:
    # type() and not isinstance(): True is an int to Python, and never a count or an amount.
    if type(value) is not int:
        yield FieldError(where, "not_an_integer", "must be an integer (money in minor units); never a float")
    elif not 0 <= value <= maximum:
        yield FieldError(where, "out_of_range", f"must be between 0 and {maximum}")
    elif looks_like_card_number(str(value)):
        yield FieldError(where, "card_data", "reads as a card number, which is never stored; pick a rounder value")
