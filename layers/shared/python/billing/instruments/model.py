"""The payment instrument: its kinds, lifecycle, what is stored about it, and the changes it allows.

Pure. An instrument is a contract (billing.contracts) whose terms are attributes with a history
(billing.contract_term_attrs); this module is the typed view of both. Changes are typed variants (InstrumentUpdate)
so the allowed changes of an instrument are readable in one place; billing.instruments.repository applies them.
"""

# S105 flags "token" in constant names; these are names of tokens and attributes, never secrets.
# ruff: noqa: S105

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final, assert_never

from billing.domain.execution import PaymentRail, looks_like_card_number, mask_card_numbers
from billing.instruments.cards import expiry_end, is_expired

CONTRACT_TYPE: Final = "payment_instrument"
INSTRUMENT_ID_PREFIX: Final = "pi_"
INSTRUMENT_ID_PATTERN: Final = re.compile(r"^pi_[0-9a-f]{32}$")


def new_instrument_id() -> str:
    """'pi_' + 32 hex digits (a UUID's), drawn again in the rare case (about 1 in 500) that the id itself would
    hold a Luhn-valid 13-19 digit window: an id must pass every card number guard it travels through."""
    while True:
        candidate = INSTRUMENT_ID_PREFIX + uuid.uuid4().hex
        if not looks_like_card_number(candidate):
            return candidate


def is_instrument_id(value: str | None) -> bool:
    """True for a vault instrument id; anything else (tok_visa, iban_settles_paid, ...) is a provider's token."""
    return value is not None and INSTRUMENT_ID_PATTERN.fullmatch(value) is not None


def shown_id(instrument_id: str, limit: int = 64) -> str:
    """An instrument id as a caller sent it, fit for a message or an audit entry: bounded, and masked should a
    caller have put a card number where an id goes."""
    return mask_card_numbers(instrument_id[:limit], "***")


def instrument_uuid(instrument_id: str) -> uuid.UUID:
    """The UUID inside an instrument id (pagination cursors carry it)."""
    return uuid.UUID(instrument_id.removeprefix(INSTRUMENT_ID_PREFIX))


def instrument_id_of(value: uuid.UUID) -> str:
    return INSTRUMENT_ID_PREFIX + value.hex


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is acting on instruments, as the audit trail records it: the user (from what API Gateway vouches for;
    the tenant from the authorizer only) or a function's identity, and where the request came from."""

    tenant_id: uuid.UUID
    actor: str
    correlation_id: str | None
    source: str | None


class InstrumentType(StrEnum):
    CARD = "card"
    SEPA_DEBIT = "sepa_debit"


class InstrumentStatus(StrEnum):
    """active -> expired | deactivated; the database's contracts guard enforces the same (BE014)."""

    ACTIVE = "active"
    EXPIRED = "expired"
    DEACTIVATED = "deactivated"


INSTRUMENT_TRANSITIONS: Final = frozenset(
    {
        (InstrumentStatus.ACTIVE, InstrumentStatus.EXPIRED),
        (InstrumentStatus.ACTIVE, InstrumentStatus.DEACTIVATED),
    }
)


def chargeable_rail(instrument_type: InstrumentType) -> PaymentRail:
    """The rail an instrument is charged over."""
    match instrument_type:
        case InstrumentType.CARD:
            return PaymentRail.CARD
        case InstrumentType.SEPA_DEBIT:
            return PaymentRail.SEPA_DEBIT
        case _:
            assert_never(instrument_type)


class InstrumentSource(StrEnum):
    """How the instrument reached us: a card number through the vault, or a token a provider issued client-side."""

    VAULT = "vault"
    PROVIDER_TOKEN = "provider_token"


class Attr(StrEnum):
    """The attribute keys an instrument's terms use (contract_term_attrs.attr_key)."""

    INSTRUMENT_TYPE = "instrument_type"
    SOURCE = "source"
    BRAND = "brand"
    CO_BRAND = "co_brand"
    LAST4 = "last4"
    IIN = "iin"
    EXP_MONTH = "exp_month"
    EXP_YEAR = "exp_year"
    HOLDER_NAME = "holder_name"
    ISSUER_COUNTRY = "issuer_country"
    FUNDING = "funding"
    COUNTRY = "country"
    BANK_CODE = "bank_code"
    MANDATE_REFERENCE = "mandate_reference"
    FINGERPRINT = "fingerprint"
    FINGERPRINT_KEY_VERSION = "fingerprint_key_version"
    VAULT_TOKEN = "vault_token"


PROVIDER_TOKEN_PREFIX: Final = "provider_token."


def provider_token_key(provider: str) -> str:
    """The attribute holding the token `provider` charges this instrument with (provider_token.stripe, ...)."""
    return PROVIDER_TOKEN_PREFIX + provider


@dataclass(frozen=True, slots=True)
class PaymentInstrument:
    """An instrument as stored: the contract row plus its open terms."""

    tenant_id: uuid.UUID
    id: str
    entity_contract_id: str
    status: InstrumentStatus
    valid_from: datetime
    valid_to: datetime | None
    created_at: datetime
    updated_at: datetime
    terms: Mapping[str, str]

    def term(self, key: str) -> str | None:
        return self.terms.get(key)

    @property
    def instrument_type(self) -> InstrumentType:
        return InstrumentType(self.terms[Attr.INSTRUMENT_TYPE])

    @property
    def expiry(self) -> tuple[int, int] | None:
        month, year = self.terms.get(Attr.EXP_MONTH), self.terms.get(Attr.EXP_YEAR)
        return (int(month), int(year)) if month and year else None

    @property
    def provider_tokens(self) -> dict[str, str]:
        return {
            key.removeprefix(PROVIDER_TOKEN_PREFIX): value
            for key, value in self.terms.items()
            if key.startswith(PROVIDER_TOKEN_PREFIX)
        }

    def lapsed(self, now: datetime) -> bool:
        """True if the card's expiry month is over (an instrument without an expiry never lapses)."""
        expiry = self.expiry
        return expiry is not None and is_expired(*expiry, now)

    def effective_status(self, now: datetime) -> InstrumentStatus:
        """The stored status, or expired for an active card whose month is over (not yet recorded)."""
        if self.status is InstrumentStatus.ACTIVE and self.lapsed(now):
            return InstrumentStatus.EXPIRED
        return self.status

    def lapsed_at(self) -> datetime | None:
        expiry = self.expiry
        return expiry_end(*expiry) if expiry else None


# --- Typed updates: every change an instrument allows ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExpiryUpdated:
    """A renewed card (account updater, or the customer): same number, new expiry."""

    exp_month: int
    exp_year: int


@dataclass(frozen=True, slots=True)
class HolderNameChanged:
    holder_name: str


@dataclass(frozen=True, slots=True)
class ProviderTokenProvisioned:
    """A provider now holds the card and charges it by this token (a new one replaces the old)."""

    provider: str
    token: str


@dataclass(frozen=True, slots=True)
class Expired:
    """The card's month is over: active -> expired, valid_to = the first instant after its month."""

    at: datetime


@dataclass(frozen=True, slots=True)
class Deactivated:
    """The customer or merchant removed it: active -> deactivated, valid_to = now."""

    at: datetime


InstrumentUpdate = ExpiryUpdated | HolderNameChanged | ProviderTokenProvisioned | Expired | Deactivated


def term_changes(update: InstrumentUpdate) -> dict[str, str]:
    """The attributes an update rewrites (closing the open rows, opening new ones); empty for status changes."""
    match update:
        case ExpiryUpdated(month, year):
            return {Attr.EXP_MONTH: str(month), Attr.EXP_YEAR: str(year)}
        case HolderNameChanged(name):
            return {Attr.HOLDER_NAME: name}
        case ProviderTokenProvisioned(provider, token):
            return {provider_token_key(provider): token}
        case Expired() | Deactivated():
            return {}
        case _:
            assert_never(update)


def status_change(update: InstrumentUpdate) -> tuple[InstrumentStatus, datetime] | None:
    """(new status, valid_to) for an update that ends the instrument; None for a change of its terms."""
    match update:
        case Expired(at):
            return InstrumentStatus.EXPIRED, at
        case Deactivated(at):
            return InstrumentStatus.DEACTIVATED, at
        case ExpiryUpdated() | HolderNameChanged() | ProviderTokenProvisioned():
            return None
        case _:
            assert_never(update)
