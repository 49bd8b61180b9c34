"""The payment instruments API's use cases, as the vault function runs them: save, read, list, deactivate.

Saving a card: validate it (characters, brand, length, Luhn, expiry, the security code's shape), fingerprint it,
look for a replay of the idempotency key, seal the number under a new KMS data key and get the provider tokens (no
transaction open for these calls), then one transaction stores the sealed number, the instrument and its terms,
and the audit entry: all or nothing. A bad card writes nothing. The security code is never stored, nor passed on:
no provider we charge needs it (billing.vault.provisioning).

Every read of an instrument's details is audited (one entry per instrument a page shows), every refusal too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, assert_never

from billing.audit import AuditEvent, AuditEventType, AuditOutcome, record_audit_event
from billing.db.connection import Connection
from billing.db.tenancy import tenant_transaction
from billing.domain.errors import (
    BillingError,
    DetokenizationDenied,
    IdempotencyKeyReused,
    PaymentInstrumentNotFound,
)
from billing.domain.execution import validate_idempotency_key
from billing.instruments.api import CreatedInstrument, InstrumentCreateRequest
from billing.instruments.cards import (
    parse_card_number,
    require_security_code_shape,
    require_unexpired,
)
from billing.instruments.fingerprints import FingerprintKeys, card_fingerprint, iban_fingerprint
from billing.instruments.iban import parse_iban
from billing.instruments.model import (
    Attr,
    Caller,
    Deactivated,
    Expired,
    InstrumentSource,
    InstrumentStatus,
    InstrumentType,
    PaymentInstrument,
    ProviderTokenProvisioned,
    new_instrument_id,
    provider_token_key,
    shown_id,
)
from billing.instruments.provider_tokens import (
    STRIPE_TEST_PAYMENT_METHODS,
    sandbox_token_for_iban,
    sandbox_token_for_payment_method,
)
from billing.instruments.repository import InstrumentListQuery, InstrumentRepository, NewInstrument
from billing.vault.envelope import SealedCard
from billing.vault.provisioning import CardForProvider, ProviderTokenizer
from billing.vault.vault import CardVault, DetokenizePurpose

RESOURCE_TYPE: Final = "payment_instrument"
SANDBOX: Final = "sandbox"

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _LostRace(Exception):
    """Another request with the same key created the instrument first: roll this transaction back."""


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A validated request: what to store, what identifies it for replays, and the card to seal (if any)."""

    entity_contract_id: str
    terms: dict[str, str]
    request_fingerprint: str
    pan: str | None = None


def request_fingerprint(document: Mapping[str, Any]) -> str:
    """SHA-256 of a canonical request document; a card's number appears in it only as its keyed fingerprint."""
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class VaultService:
    """Implements billing.instruments.api.InstrumentApi on the vault role's connection."""

    def __init__(
        self,
        conn: Connection,
        vault: CardVault,
        fingerprint_keys: FingerprintKeys,
        tokenizers: Sequence[ProviderTokenizer],
        *,
        clock: Clock = _utc_now,
    ) -> None:
        self._conn = conn
        self._vault = vault
        self._keys = fingerprint_keys
        self._tokenizers = tuple(tokenizers)
        self._instruments = InstrumentRepository(conn)
        self._clock = clock

    # -- create ------------------------------------------------------------------------------------------

    def create(self, caller: Caller, request: InstrumentCreateRequest, *, idempotency_key: str) -> CreatedInstrument:
        """Save an instrument exactly once per (tenant, idempotency key)."""
        key = validate_idempotency_key(idempotency_key)
        prepared = self._prepare(caller, request)
        # Layer 1: a replay ends here, before any key service or provider is asked for anything.
        existing = self._instruments.find_by_idempotency_key(caller.tenant_id, key)
        if existing is not None:
            return CreatedInstrument(_replay(*existing, prepared.request_fingerprint, key), created=False)
        sealed: tuple[str, SealedCard] | None = None
        terms = dict(prepared.terms)
        if prepared.pan is not None:
            sealed = self._vault.seal(caller.tenant_id, prepared.pan)
            terms[Attr.VAULT_TOKEN] = sealed[0]
            terms.update(self._provision(prepared.pan, request))
        instrument_id = new_instrument_id()
        try:
            with tenant_transaction(self._conn, caller.tenant_id):
                if sealed is not None:
                    self._vault.store(caller.tenant_id, *sealed)
                created = self._instruments.insert(
                    caller.tenant_id,
                    instrument_id,
                    NewInstrument(prepared.entity_contract_id, terms),
                    idempotency_key=key,
                    request_fingerprint=prepared.request_fingerprint,
                )
                if created is None:
                    raise _LostRace
                if sealed is not None:
                    self._audit(caller, AuditEventType.CARDHOLDER_DATA_TOKENIZED, AuditOutcome.SUCCEEDED, created.id,
                                purpose="save_instrument", details={"brand": terms.get(Attr.BRAND, "")})  # fmt: skip
        except _LostRace:
            # Layer 2: the unique index chose the other request; its instrument is the answer (or the key's misuse).
            winner = self._instruments.find_by_idempotency_key(caller.tenant_id, key)
            assert winner is not None, "the conflicting instrument is committed before ON CONFLICT gives way"
            return CreatedInstrument(_replay(*winner, prepared.request_fingerprint, key), created=False)
        return CreatedInstrument(created, created=True)

    def _prepare(self, caller: Caller, request: InstrumentCreateRequest) -> _Prepared:
        """Validate the request (422 with a stable code, nothing written) and work out what to store."""
        now = self._clock()
        base = {Attr.INSTRUMENT_TYPE.value: request.type.value}
        match request.type:
            case InstrumentType.CARD if request.card is not None:
                card_input = request.card
                card = parse_card_number(card_input.number.get_secret_value())
                require_unexpired(card_input.exp_month, card_input.exp_year, now)
                if card_input.cvc is not None:
                    require_security_code_shape(card_input.cvc.get_secret_value(), card.brand)
                fingerprint = card_fingerprint(self._keys, caller.tenant_id, card.digits)
                terms = {
                    **base,
                    Attr.SOURCE: InstrumentSource.VAULT,
                    Attr.BRAND: card.brand,
                    Attr.LAST4: card.last4,
                    Attr.IIN: card.iin,
                    Attr.EXP_MONTH: str(card_input.exp_month),
                    Attr.EXP_YEAR: str(card_input.exp_year),
                    Attr.FINGERPRINT: fingerprint.value,
                    Attr.FINGERPRINT_KEY_VERSION: fingerprint.key_version,
                }
                if card.co_brand is not None:
                    terms[Attr.CO_BRAND] = card.co_brand
                if card_input.holder_name:
                    terms[Attr.HOLDER_NAME] = card_input.holder_name
                document = {
                    "entity_contract_id": request.entity_contract_id,
                    "type": request.type.value,
                    "card": {"fingerprint": fingerprint.value, "exp_month": card_input.exp_month,
                             "exp_year": card_input.exp_year, "holder_name": card_input.holder_name},
                }  # fmt: skip
                return _Prepared(request.entity_contract_id, _text(terms), request_fingerprint(document), card.digits)
            case InstrumentType.CARD if request.provider_token is not None:
                token = request.provider_token.token
                terms = {
                    **base,
                    Attr.SOURCE: InstrumentSource.PROVIDER_TOKEN,
                    provider_token_key(request.provider_token.provider): token,
                    provider_token_key(SANDBOX): sandbox_token_for_payment_method(token),
                }
                known = STRIPE_TEST_PAYMENT_METHODS.get(token)
                if known is not None:
                    terms |= {Attr.BRAND: known.brand, Attr.LAST4: known.last4}
                document = {
                    "entity_contract_id": request.entity_contract_id,
                    "type": request.type.value,
                    "provider_token": request.provider_token.model_dump(mode="json"),
                }
                return _Prepared(request.entity_contract_id, _text(terms), request_fingerprint(document))
            case InstrumentType.SEPA_DEBIT if request.sepa_debit is not None:
                sepa = request.sepa_debit
                iban = parse_iban(sepa.iban.get_secret_value())
                fingerprint = iban_fingerprint(self._keys, caller.tenant_id, iban.value)
                terms = {
                    **base,
                    Attr.SOURCE: InstrumentSource.VAULT,
                    Attr.HOLDER_NAME: sepa.holder_name,
                    Attr.COUNTRY: iban.country,
                    Attr.LAST4: iban.last4,
                    Attr.BANK_CODE: iban.bank_code,
                    Attr.MANDATE_REFERENCE: sepa.mandate_reference,
                    Attr.FINGERPRINT: fingerprint.value,
                    Attr.FINGERPRINT_KEY_VERSION: fingerprint.key_version,
                    # The provider holds the mandate, and with it the account: the IBAN itself is dropped here.
                    provider_token_key(SANDBOX): sandbox_token_for_iban(iban.value),
                }
                document = {
                    "entity_contract_id": request.entity_contract_id,
                    "type": request.type.value,
                    "sepa_debit": {"fingerprint": fingerprint.value, "holder_name": sepa.holder_name,
                                   "mandate_reference": sepa.mandate_reference},
                }  # fmt: skip
                return _Prepared(request.entity_contract_id, _text(terms), request_fingerprint(document))
            case InstrumentType.CARD | InstrumentType.SEPA_DEBIT:
                raise AssertionError("InstrumentCreateRequest guarantees one source per type")
            case _:
                assert_never(request.type)

    def _provision(self, pan: str, request: InstrumentCreateRequest) -> dict[str, str]:
        """Provider tokens for a card in hand, one per provider that can hold it (the CVC goes along, and is then
        forgotten)."""
        assert request.card is not None
        card = parse_card_number(pan)
        code = request.card.cvc.get_secret_value() if request.card.cvc is not None else None
        for_provider = CardForProvider(
            pan, request.card.exp_month, request.card.exp_year, card.brand, request.card.holder_name, code
        )
        tokens = {provider_token_key(t.provider): t.tokenize(for_provider) for t in self._tokenizers}
        return {key: token for key, token in tokens.items() if token is not None}

    # -- read --------------------------------------------------------------------------------------------

    def get(self, caller: Caller, instrument_id: str) -> PaymentInstrument:
        """One instrument of the caller's tenant, audited; a card whose month is over is recorded as expired."""
        refusal: BillingError | None = None
        with tenant_transaction(self._conn, caller.tenant_id):
            instrument = self._instruments.get(caller.tenant_id, instrument_id)
            if instrument is None:
                refusal = _not_found(instrument_id)
            else:
                instrument = self._record_lapse(instrument)
            self._audit(caller, AuditEventType.INSTRUMENT_READ, _outcome(refusal), instrument_id, purpose="read",
                        details=_reason(refusal))  # fmt: skip
        if refusal is not None or instrument is None:
            raise refusal or _not_found(instrument_id)
        return instrument

    def list_page(self, caller: Caller, query: InstrumentListQuery) -> tuple[list[PaymentInstrument], bool]:
        """One page of an entity contract's instruments; each one shown is an audited read."""
        with tenant_transaction(self._conn, caller.tenant_id):
            items, more = self._instruments.list_page(caller.tenant_id, query)
            items = [self._record_lapse(item) for item in items]
            for item in items:
                self._audit(caller, AuditEventType.INSTRUMENT_READ, AuditOutcome.GRANTED, item.id, purpose="list")
        return items, more

    def _record_lapse(self, instrument: PaymentInstrument) -> PaymentInstrument:
        """Record active -> expired for a card whose month is over (in the reading transaction)."""
        lapsed_at = instrument.lapsed_at()
        if instrument.status is InstrumentStatus.ACTIVE and lapsed_at and instrument.lapsed(self._clock()):
            return self._instruments.apply(instrument.tenant_id, instrument.id, Expired(lapsed_at))
        return instrument

    # -- deactivate --------------------------------------------------------------------------------------

    def deactivate(self, caller: Caller, instrument_id: str) -> PaymentInstrument:
        """End the instrument (valid_to set, history kept) and shred its card number; idempotent."""
        refusal: BillingError | None = None
        ended: PaymentInstrument | None = None
        with tenant_transaction(self._conn, caller.tenant_id):
            instrument = self._instruments.get(caller.tenant_id, instrument_id)
            if instrument is None:
                refusal = _not_found(instrument_id)
                details = _reason(refusal)
            else:
                ended = self._instruments.apply(caller.tenant_id, instrument_id, Deactivated(self._clock()))
                token = instrument.term(Attr.VAULT_TOKEN)
                shredded = self._vault.shred(caller.tenant_id, token) if token else False
                details = {"status": ended.status.value, "card_number_shredded": str(shredded).lower()}
            self._audit(caller, AuditEventType.INSTRUMENT_DEACTIVATED, _outcome(refusal), instrument_id,
                        purpose="deactivate", details=details)  # fmt: skip
        if refusal is not None or ended is None:
            raise refusal or _not_found(instrument_id)
        return ended

    # -- detokenization ----------------------------------------------------------------------------------

    def provision_provider_token(
        self, caller: Caller, instrument_id: str, tokenizer: ProviderTokenizer
    ) -> PaymentInstrument:
        """Give a provider the card behind an instrument and store the token it returns (audited detokenization)."""
        instrument = self._instruments.require(caller.tenant_id, instrument_id)
        expiry = instrument.expiry
        token = instrument.term(Attr.VAULT_TOKEN)
        brand = instrument.term(Attr.BRAND)
        if token is None or expiry is None or brand is None:
            raise DetokenizationDenied("the instrument holds no card number to provision", reason="not_a_vault_card")
        pan = self._vault.detokenize(caller, token, DetokenizePurpose.PROVISION_PROVIDER_TOKEN, resource=instrument_id)
        card = parse_card_number(pan)
        provider_token = tokenizer.tokenize(
            CardForProvider(pan, expiry[0], expiry[1], card.brand, instrument.term(Attr.HOLDER_NAME))
        )
        if provider_token is None:
            # The security code is long gone (never stored): a provider that insists on one cannot take the card now.
            raise DetokenizationDenied(
                f"{tokenizer.provider} cannot hold this card without its security code", reason="provider_refused_card"
            )
        return self._instruments.apply(
            caller.tenant_id, instrument_id, ProviderTokenProvisioned(tokenizer.provider, provider_token)
        )

    # -- internals ---------------------------------------------------------------------------------------

    def _audit(
        self,
        caller: Caller,
        event_type: AuditEventType,
        outcome: AuditOutcome,
        instrument_id: str,
        *,
        purpose: str,
        details: Mapping[str, str] | None = None,
    ) -> None:
        record_audit_event(
            self._conn,
            AuditEvent(
                event_type=event_type,
                outcome=outcome,
                actor=caller.actor,
                tenant_id=caller.tenant_id,
                resource_type=RESOURCE_TYPE,
                resource_id=shown_id(instrument_id, 200),
                purpose=purpose,
                correlation_id=caller.correlation_id,
                source=caller.source,
                details=dict(details or {}),
            ),
        )


def _text(terms: Mapping[str, object]) -> dict[str, str]:
    return {str(key): str(value) for key, value in terms.items()}


def _not_found(instrument_id: str) -> PaymentInstrumentNotFound:
    return PaymentInstrumentNotFound(f"payment instrument {shown_id(instrument_id)} not found")


def _outcome(refusal: BillingError | None) -> AuditOutcome:
    return AuditOutcome.DENIED if refusal is not None else AuditOutcome.GRANTED


def _reason(refusal: BillingError | None) -> dict[str, str]:
    return {"reason": refusal.code} if refusal is not None else {}


def _replay(existing: PaymentInstrument, stored_fingerprint: str, fingerprint: str, key: str) -> PaymentInstrument:
    """The instrument a repeated key stands for, or IdempotencyKeyReused if the request differs."""
    if stored_fingerprint != fingerprint:
        raise IdempotencyKeyReused(
            f"idempotency key {key!r} was already used with a different request (instrument {existing.id}); "
            "use a new key for a different instrument"
        )
    return existing
