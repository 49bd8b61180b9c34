"""The billing execution: the request that creates one, and the row as the database holds it."""

from __future__ import annotations

import hashlib
import json
import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, field_validator
from pydantic import ValidationError as PydanticValidationError

from billing.domain.errors import FieldError, IdempotencyKeyInvalid, ValidationFailed
from billing.domain.money import MAX_AMOUNT_MINOR, Money, is_known_currency
from billing.domain.status import ExecutionStatus


class PaymentRail(StrEnum):
    CARD = "card"
    SEPA_DEBIT = "sepa_debit"
    ACH_DEBIT = "ach_debit"


# Idempotency keys are echoed in logs, events and provider calls: printable ASCII only, bounded length.
IDEMPOTENCY_KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,255}$")
# Contract and instrument references are identifiers from other systems, never free text.
_IDENTIFIER = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]

# Metadata has the shape payment providers give it (Stripe's limits): a flat object of at most 50 string keys of
# up to 40 characters to string values of up to 500. Strings only, so every provider can take it as it is.
MAX_METADATA_KEYS: Final = 50
MAX_METADATA_KEY_LENGTH: Final = 40
MAX_METADATA_VALUE_LENGTH: Final = 500
METADATA_KEY_PATTERN: Final = rf"^[A-Za-z0-9_.-]{{1,{MAX_METADATA_KEY_LENGTH}}}$"
MetadataKey = Annotated[str, StringConstraints(pattern=METADATA_KEY_PATTERN)]
MetadataValue = Annotated[str, StringConstraints(max_length=MAX_METADATA_VALUE_LENGTH)]

# Characters no text column can take: PostgreSQL text cannot hold NUL, and UTF-8 cannot encode a lone surrogate
# (which JSON can carry as an escaped "\ud800"). Refused at the edge, so the database never sees them.
UNSTORABLE_CHARACTER: Final = re.compile("[\x00\ud800-\udfff]")

# --- Card numbers ---------------------------------------------------------------------------------------------
# A primary account number has 13-19 digits (ISO/IEC 7812) and a Luhn check digit. People type it with any mix of
# these between the digits: spaces (any run of them), tabs, no-break spaces, "-", ".", "/" and "_".
PAN_MIN_DIGITS: Final = 13
PAN_MAX_DIGITS: Final = 19
CARD_NUMBER_SEPARATORS: Final = " \t\u00a0-./_"
_DIGIT_GROUP = re.compile(rf"\d+(?:[{re.escape(CARD_NUMBER_SEPARATORS)}]+\d+)*")
_DIGIT_CHUNK = re.compile(r"\d+")
# Luhn doubles every second digit from the right and subtracts 9 from a two-digit result.
_LUHN_DOUBLED: Final = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)
# A UUID in its canonical form (8-4-4-4-12 hex digits) is no way anyone types a card number, yet one in about 400
# random UUIDs has digit-only groups forming a Luhn-valid 13-19 digit window across its hyphens. Idempotency keys
# and correlation ids are mostly UUIDs, so these are read past, as the database's twin (billing.card_number_in) does.
UUID_PATTERN: Final = re.compile(
    r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}(?![0-9A-Fa-f])"
)


def card_number_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every Luhn-valid 13-19 digit number in text, the separators typed inside it included.

    The one detector behind input refusal and log masking. Candidates start and end at a chunk of digits between
    separators: "4111 1111 1111 1111 12/27" yields its first 16 digits, while one unbroken run of 20 digits (an
    order number, a timestamp in microseconds) is never cut into a card number, and a canonical UUID is read past.
    """
    spans: list[tuple[int, int]] = []
    # Same length, no digits: positions in `text` stay valid for the spans returned.
    text = UUID_PATTERN.sub(lambda uuid: "u" * len(uuid.group()), text)
    for group in _DIGIT_GROUP.finditer(text):
        chunks = list(_DIGIT_CHUNK.finditer(text, group.start(), group.end()))
        digits = [int(c) for chunk in chunks for c in chunk.group()]
        if len(digits) < PAN_MIN_DIGITS:
            continue
        # bounds[i]: index in `digits` where chunk i starts (bounds[-1] is the end).
        bounds = [0]
        for chunk in chunks:
            bounds.append(bounds[-1] + chunk.end() - chunk.start())
        even_last, odd_last = _luhn_prefix_sums(digits)
        for first in range(len(chunks)):
            start = bounds[first]
            lo = bisect_left(bounds, start + PAN_MIN_DIGITS, first + 1)
            hi = bisect_right(bounds, start + PAN_MAX_DIGITS, first + 1)
            for end_bound in range(lo, hi):
                end = bounds[end_bound]
                sums = even_last if (end - 1) % 2 == 0 else odd_last
                if (sums[end] - sums[start]) % 10 == 0:
                    spans.append((chunks[first].start(), chunks[end_bound - 1].end()))
    return spans


def _luhn_prefix_sums(digits: list[int]) -> tuple[list[int], list[int]]:
    """Prefix sums of the Luhn terms for a window whose last digit has an even / an odd index.

    Which digits Luhn doubles depends only on the parity of the window's last index, so the checksum of any window
    is a difference of two prefix sums: every candidate window of a group is checked in constant time.
    """
    even_last, odd_last = [0], [0]
    for index, digit in enumerate(digits):
        plain, doubled = digit, _LUHN_DOUBLED[digit]
        even_last.append(even_last[-1] + (plain if index % 2 == 0 else doubled))
        odd_last.append(odd_last[-1] + (doubled if index % 2 == 0 else plain))
    return even_last, odd_last


def looks_like_card_number(text: str) -> bool:
    """True if text holds a Luhn-valid 13-19 digit number: card data must never be stored or logged."""
    return bool(card_number_spans(text))


def mask_card_numbers(text: str, mask: str) -> str:
    """text with every card number (as card_number_spans finds them, separators included) replaced by mask."""
    spans = card_number_spans(text)
    if not spans:
        return text
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    pieces, position = [], 0
    for start, end in merged:
        pieces += [text[position:start], mask]
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


def validate_idempotency_key(key: str | None) -> str:
    """Return the key if acceptable, else raise ValidationFailed (before anything is written)."""
    if key is None or key == "":
        raise IdempotencyKeyInvalid([FieldError("idempotency_key", "required", "an idempotency key is required")])
    if looks_like_card_number(key):
        # Keys are echoed in logs, events and provider calls: card data must never travel in one.
        raise IdempotencyKeyInvalid(
            [FieldError("idempotency_key", "card_data", "idempotency key looks like a card number")]
        )
    if not IDEMPOTENCY_KEY_PATTERN.fullmatch(key):
        raise IdempotencyKeyInvalid(
            [
                FieldError(
                    "idempotency_key",
                    "invalid_format",
                    "idempotency key must be 1-255 printable ASCII characters without spaces",
                )
            ]
        )
    return key


class ExecutionRequest(BaseModel):
    """What a caller asks the engine to charge. Strict: no coercion, no unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    entity_contract_id: _IDENTIFIER
    plan_contract_id: _IDENTIFIER
    amount: Annotated[StrictInt, Field(gt=0, le=MAX_AMOUNT_MINOR, description="Integer minor units")]
    currency: Annotated[
        str, Field(pattern=r"^[A-Z]{3}$", description="Active ISO 4217 code, upper case", examples=["EUR"])
    ]
    payment_rail: PaymentRail
    payment_instrument_id: _IDENTIFIER | None = None
    metadata: Annotated[
        dict[MetadataKey, MetadataValue],
        Field(
            max_length=MAX_METADATA_KEYS,
            description=(
                f"Flat string-to-string map: at most {MAX_METADATA_KEYS} keys of 1-{MAX_METADATA_KEY_LENGTH} "
                f"characters [A-Za-z0-9_.-], values of at most {MAX_METADATA_VALUE_LENGTH} characters; "
                "never card data"
            ),
            # Keys outside the pattern are refused, which patternProperties alone does not say.
            json_schema_extra={"additionalProperties": False},
        ),
    ] = Field(default_factory=dict)

    @field_validator("entity_contract_id", "plan_contract_id", "payment_instrument_id")
    @classmethod
    def _no_card_data(cls, value: str | None) -> str | None:
        # An instrument is referenced by its token, never by its number: a PAN here would be stored in clear.
        if value is not None and looks_like_card_number(value):
            raise ValueError("looks like a card number; reference a tokenized payment instrument instead")
        return value

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        if not is_known_currency(value):
            raise ValueError("must be an active ISO 4217 code in upper case")
        return value

    @field_validator("payment_rail", mode="before")
    @classmethod
    def _rail_from_text(cls, value: Any) -> Any:
        # Strict mode refuses plain strings for enums; JSON only has strings, so accept exact values.
        if isinstance(value, str) and value in PaymentRail.__members__.values():
            return PaymentRail(value)
        return value

    @field_validator("metadata")
    @classmethod
    def _no_card_data_in_metadata(cls, value: dict[str, str]) -> dict[str, str]:
        # Shape and bounds are checked by the annotations; what they cannot say is checked here.
        for key, item in value.items():
            if looks_like_card_number(key):
                raise ValueError("a key looks like a card number; card data is never accepted")
            if UNSTORABLE_CHARACTER.search(item):
                raise ValueError(f"value of {key!r} holds a NUL character or a lone surrogate")
            if looks_like_card_number(item):
                raise ValueError(f"value of {key!r} looks like a card number; card data is never accepted")
        return value

    @classmethod
    def parse(cls, data: Any) -> ExecutionRequest:
        """Validate untrusted input, turning pydantic's errors into our typed ValidationFailed."""
        try:
            return cls.model_validate(data)
        except PydanticValidationError as exc:
            raise ValidationFailed(
                [
                    # A metadata key is part of the location: masked, as it may itself be a card number.
                    FieldError(
                        mask_card_numbers(".".join(str(p) for p in err["loc"]), "***") or "body",
                        err["type"],
                        err["msg"],
                    )
                    for err in exc.errors(include_url=False, include_input=False)
                ]
            ) from None

    @property
    def money(self) -> Money:
        return Money(self.amount, self.currency)

    def fingerprint(self) -> str:
        """SHA-256 of the canonical parameters: the same idempotency key must always carry the same request."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Execution:
    """A billing_executions row as committed."""

    tenant_id: UUID
    id: UUID
    entity_contract_id: str
    plan_contract_id: str
    amount: int
    currency: str
    status: ExecutionStatus
    payment_rail: PaymentRail
    payment_provider: str
    payment_instrument_id: str | None
    provider_reference: str | None
    idempotency_key: str | None
    request_fingerprint: str
    correlation_id: str | None
    metadata: dict[str, Any]
    attempt_count: int
    last_error_code: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None
    finished_at: datetime | None

    @property
    def money(self) -> Money:
        return Money(self.amount, self.currency)

    @property
    def awaiting_settlement(self) -> bool:
        """Pending at the provider (submitted), as opposed to pending before submission."""
        return self.status is ExecutionStatus.PENDING and self.submitted_at is not None


@dataclass(frozen=True, slots=True)
class ExecutionEvent:
    """One row of the append-only lifecycle event store."""

    tenant_id: UUID
    id: UUID
    execution_id: UUID
    type: str
    old_status: ExecutionStatus | None
    new_status: ExecutionStatus
    metadata: dict[str, Any]
    user_id: str | None
    correlation_id: str | None
    occurred_at: datetime
