"""The billing execution: the request that creates one, and the row as the database holds it."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any
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
_METADATA_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
_MAX_METADATA_KEYS = 20
_MAX_METADATA_VALUE = 500
# 13-19 digits, optionally separated by spaces or dashes: the shape of a primary account number.
_PAN_CANDIDATE = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")

MetadataValue = str | int | bool | None


def looks_like_card_number(text: str) -> bool:
    """True if text holds a Luhn-valid 13-19 digit sequence: card data must never be stored or logged."""
    for match in _PAN_CANDIDATE.finditer(text):
        digits = [int(c) for c in match.group() if c.isdigit()]
        checksum = 0
        for index, digit in enumerate(reversed(digits)):
            if index % 2 == 1:
                digit = digit * 2 - 9 if digit > 4 else digit * 2
            checksum += digit
        if checksum % 10 == 0:
            return True
    return False


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
    currency: Annotated[str, Field(description="ISO 4217 code, upper case", examples=["EUR"])]
    payment_rail: PaymentRail
    payment_instrument_id: _IDENTIFIER | None = None
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)

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
    def _bounded_metadata(cls, value: dict[str, MetadataValue]) -> dict[str, MetadataValue]:
        if len(value) > _MAX_METADATA_KEYS:
            raise ValueError(f"at most {_MAX_METADATA_KEYS} keys")
        for key, item in value.items():
            if not _METADATA_KEY.fullmatch(key):
                raise ValueError(f"key {key[:40]!r} must be 1-40 of [A-Za-z0-9_.-]")
            text = str(item)
            if len(text) > _MAX_METADATA_VALUE:
                raise ValueError(f"value of {key!r} exceeds {_MAX_METADATA_VALUE} characters")
            if looks_like_card_number(text):
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
                    FieldError(".".join(str(p) for p in err["loc"]) or "body", err["type"], err["msg"])
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
