"""The payment instruments API: request and response models, and the routes the vault function serves.

The routes are declared once, here, as a Powertools Router built for a service (`instrument_routes`): the vault
function includes them to serve them, and the execute function's OpenAPI document includes them for documentation
only (`instrument_openapi_paths`), so one document describes the whole API without the execute function ever
handling a card. The models carry no behaviour beyond shape checks; the card checks that have stable error codes
(Luhn, brand, expiry, IBAN) run in the vault's service, so a bad card is `card_number_invalid`, not a generic 422.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, Protocol, Self

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)

from billing.api.cursor import decode_cursor, encode_cursor
from billing.api.input_safety import MAX_JSON_DEPTH
from billing.api.problems import PROBLEM_CONTENT_TYPE
from billing.aws.cold_start import lazy_module
from billing.domain.execution import looks_like_card_number
from billing.instruments.model import (
    Attr,
    Caller,
    InstrumentSource,
    InstrumentStatus,
    InstrumentType,
    PaymentInstrument,
    instrument_uuid,
)
from billing.resource_names import API_BASE_PATH, MAX_REQUEST_BODY_BYTES

# Powertools' parameter markers bring its validation machinery: loaded by the first validated request (the routes
# validate one by one, see instrument_routes), not with the vault function's import.
if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler.openapi import params

    from billing.instruments.repository import InstrumentListQuery
else:
    params = lazy_module("aws_lambda_powertools.event_handler.openapi.params")

PAYMENT_INSTRUMENTS: Final = f"{API_BASE_PATH}/payment-instruments"
TAG: Final = "Payment instruments"

_IDENTIFIER = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]
# SEPA's character set for a mandate reference (max 35).
_MANDATE_REFERENCE = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+?/:().,'-][A-Za-z0-9 +?/:().,'-]{0,34}$")]
_HOLDER_NAME = Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True)]


def _no_card_number(value: str | None) -> str | None:
    if value is not None and looks_like_card_number(value):
        raise ValueError("looks like a card number; card numbers go in card.number only")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class CardInput(_Strict):
    """A card as the customer typed it. Never logged, never stored as given: the number goes to the vault
    encrypted, the security code is used for nothing and dropped (PCI DSS 3.3.1)."""

    number: SecretStr = Field(
        min_length=1, max_length=32, description="The card number; spaces or dashes between groups are fine"
    )
    exp_month: Annotated[StrictInt, Field(ge=1, le=12)]
    exp_year: Annotated[StrictInt, Field(ge=2000, le=2099, description="Four digits")]
    cvc: SecretStr | None = Field(
        None, min_length=1, max_length=8, description="Checked for shape (3 digits, 4 for Amex), never stored"
    )
    holder_name: _HOLDER_NAME | None = None

    @field_validator("holder_name")
    @classmethod
    def _holder_not_a_card(cls, value: str | None) -> str | None:
        return _no_card_number(value)


class ProviderTokenInput(_Strict):
    """A payment method a provider tokenized in the customer's browser (Stripe.js): no card number reaches us."""

    provider: Literal["stripe"]
    token: Annotated[str, StringConstraints(pattern=r"^pm_[A-Za-z0-9_]{1,250}$")]

    @field_validator("token")
    @classmethod
    def _token_not_a_card(cls, value: str) -> str | None:
        return _no_card_number(value)


class SepaDebitInput(_Strict):
    """A SEPA Direct Debit mandate: the IBAN is validated, fingerprinted and dropped, never stored."""

    iban: SecretStr = Field(min_length=1, max_length=48, description="The account's IBAN; spaces are fine")
    holder_name: _HOLDER_NAME
    mandate_reference: _MANDATE_REFERENCE

    @field_validator("holder_name", "mandate_reference")
    @classmethod
    def _text_not_a_card(cls, value: str) -> str | None:
        return _no_card_number(value)


class InstrumentCreateRequest(_Strict):
    """A card (`card`, or a provider's `provider_token`) or a SEPA debit (`sepa_debit`), for one entity contract."""

    entity_contract_id: _IDENTIFIER
    type: InstrumentType
    card: CardInput | None = None
    provider_token: ProviderTokenInput | None = None
    sepa_debit: SepaDebitInput | None = None

    @field_validator("entity_contract_id")
    @classmethod
    def _entity_not_a_card(cls, value: str) -> str | None:
        return _no_card_number(value)

    @field_validator("type", mode="before")
    @classmethod
    def _type_from_text(cls, value: Any) -> Any:
        # Strict mode refuses plain strings for enums; JSON only has strings, so accept exact values.
        if isinstance(value, str) and value in InstrumentType.__members__.values():
            return InstrumentType(value)
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        given = [name for name in ("card", "provider_token", "sepa_debit") if getattr(self, name) is not None]
        allowed = {InstrumentType.CARD: (["card"], ["provider_token"]), InstrumentType.SEPA_DEBIT: (["sepa_debit"],)}
        if given not in [list(option) for option in allowed[self.type]]:
            expected = " or ".join(" ".join(option) for option in allowed[self.type])
            raise ValueError(f"a {self.type.value} instrument takes exactly one of: {expected}")
        return self


class InstrumentResource(BaseModel):
    """An instrument as the API shows it: never a card number, a security code or a full IBAN."""

    id: str = Field(description="pi_ followed by 32 hex digits; pass it as an execution's payment_instrument_id")
    type: InstrumentType
    status: InstrumentStatus = Field(description="active, expired (its month is over) or deactivated")
    entity_contract_id: str
    source: InstrumentSource
    brand: str | None
    co_brand: str | None
    last4: str | None
    exp_month: int | None
    exp_year: int | None
    holder_name: str | None
    country: str | None = Field(description="sepa_debit: the account's country")
    bank_code: str | None = Field(description="sepa_debit: the bank code inside the IBAN")
    mandate_reference: str | None
    fingerprint: str | None = Field(description="The same card or account gives the same value within a tenant")
    fingerprint_key_version: str | None
    created_at: datetime
    valid_to: datetime | None = Field(description="When it stopped being usable; null while active")

    @classmethod
    def of(cls, instrument: PaymentInstrument, now: datetime | None = None) -> InstrumentResource:
        term = instrument.term
        expiry = instrument.expiry
        moment = now or datetime.now(UTC)
        status = instrument.effective_status(moment)
        return cls(
            id=instrument.id,
            type=instrument.instrument_type,
            status=status,
            entity_contract_id=instrument.entity_contract_id,
            source=InstrumentSource(term(Attr.SOURCE) or InstrumentSource.VAULT),
            brand=term(Attr.BRAND),
            co_brand=term(Attr.CO_BRAND),
            last4=term(Attr.LAST4),
            exp_month=expiry[0] if expiry else None,
            exp_year=expiry[1] if expiry else None,
            holder_name=term(Attr.HOLDER_NAME),
            country=term(Attr.COUNTRY),
            bank_code=term(Attr.BANK_CODE),
            mandate_reference=term(Attr.MANDATE_REFERENCE),
            fingerprint=term(Attr.FINGERPRINT),
            fingerprint_key_version=term(Attr.FINGERPRINT_KEY_VERSION),
            created_at=instrument.created_at,
            valid_to=instrument.valid_to if instrument.valid_to else (
                instrument.lapsed_at() if status is InstrumentStatus.EXPIRED else None
            ),
        )  # fmt: skip


class InstrumentPage(BaseModel):
    items: list[InstrumentResource]
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page; null on the last page")


# --- The service the routes call --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreatedInstrument:
    """created=False: an earlier request with the same key and body made this instrument (a replay)."""

    instrument: PaymentInstrument
    created: bool


class InstrumentApi(Protocol):
    """The use cases behind the routes (billing.vault.service.VaultService)."""

    def create(
        self, caller: Caller, request: InstrumentCreateRequest, *, idempotency_key: str
    ) -> CreatedInstrument: ...

    def get(self, caller: Caller, instrument_id: str) -> PaymentInstrument: ...

    def list_page(self, caller: Caller, query: InstrumentListQuery) -> tuple[list[PaymentInstrument], bool]: ...

    def deactivate(self, caller: Caller, instrument_id: str) -> PaymentInstrument: ...


# --- Routes ------------------------------------------------------------------------------------------------------

_PROBLEMS: Final[dict[int, str]] = {
    400: "malformed_request (body not JSON, cursor not issued by this API) or idempotency_key_invalid",
    401: "unauthenticated: no valid bearer token",
    404: "payment_instrument_not_found: no such instrument for the caller's tenant",
    409: "instrument_lifecycle_violated: the instrument's history does not allow the change",
    413: f"payload_too_large: the body exceeds {MAX_REQUEST_BODY_BYTES} bytes",
    415: "unsupported_media_type: a body that is not application/json",
    422: (
        "validation_failed (the fields in `errors`; NUL characters and lone surrogates anywhere, JSON nested deeper "
        f"than {MAX_JSON_DEPTH} levels and integers beyond ±(2**53-1) included), card_number_invalid, "
        "card_brand_unsupported, card_expired, card_security_code_invalid, iban_invalid, iban_country_unsupported, "
        "card_data_refused or idempotency_key_reused; nothing is written"
    ),
}
_EVERY_ROUTE: Final = (401, 413, 415, 422)


def _responses(
    success: dict[int, str], *problems: int, problem_model: type[BaseModel] | None
) -> dict[int, OpenAPIResponse]:
    responses: dict[int, OpenAPIResponse] = {status: {"description": text} for status, text in success.items()}
    for status in sorted({*problems, *_EVERY_ROUTE}):
        responses[status] = {"description": _PROBLEMS[status]}
        if problem_model is not None:
            responses[status]["content"] = {PROBLEM_CONTENT_TYPE: {"model": problem_model}}
    return responses


def _json(status: int, model: Any) -> Response[Any]:
    return Response(status, "application/json", model)


def instrument_routes(service: Callable[[], InstrumentApi], *, problem_model: type[BaseModel] | None = None) -> Router:
    """The four instrument routes as a fresh Router calling `service()`; the caller comes from the resolver's
    context ("caller", set per request by the function that serves them).

    `problem_model` documents the body of the error responses (billing.api.resources.Problem, for the OpenAPI
    document). The vault, which serves the routes and no document, leaves it out: the API's resource models are a
    twentieth of its cold start, and no request of its reads them (problems are built by billing.api.problems)."""
    router = Router()  # type: ignore[no-untyped-call]  # Powertools leaves its __init__ unannotated

    def caller() -> Caller:
        found: Caller = router.context["caller"]
        return found

    @router.post(
        PAYMENT_INSTRUMENTS,
        tags=[TAG],
        enable_validation=True,
        responses=_responses(
            {201: "Saved", 200: "Replay: the instrument this key created"}, 400, problem_model=problem_model
        ),
    )
    def create_payment_instrument(
        body: InstrumentCreateRequest,
        idempotency_key: Annotated[str | None, params.Header(alias="Idempotency-Key")] = None,
    ) -> Response[InstrumentResource]:
        outcome = service().create(caller(), body, idempotency_key=idempotency_key or "")
        return _json(201 if outcome.created else 200, InstrumentResource.of(outcome.instrument))

    @router.get(
        PAYMENT_INSTRUMENTS,
        tags=[TAG],
        enable_validation=True,
        responses=_responses({200: "One page, newest first"}, 400, problem_model=problem_model),
    )
    def list_payment_instruments(
        entity_contract_id: Annotated[str, params.Query(max_length=128)],
        status: Annotated[InstrumentStatus | None, params.Query()] = None,
        cursor: Annotated[str | None, params.Query(max_length=512)] = None,
        limit: Annotated[int, params.Query(ge=1, le=100)] = 20,
    ) -> Response[InstrumentPage]:
        # Imported here, not at the top: the repository brings psycopg into the cold start of every API function.
        from billing.instruments.repository import InstrumentListQuery

        query = InstrumentListQuery(entity_contract_id, status, decode_cursor(cursor) if cursor else None, limit)
        items, more = service().list_page(caller(), query)
        last = items[-1] if more else None
        next_cursor = encode_cursor(last.created_at, instrument_uuid(last.id)) if last else None
        return _json(200, InstrumentPage(items=[InstrumentResource.of(i) for i in items], next_cursor=next_cursor))

    @router.get(
        f"{PAYMENT_INSTRUMENTS}/<instrument_id>",
        tags=[TAG],
        enable_validation=True,
        responses=_responses({200: "The instrument"}, 404, problem_model=problem_model),
    )
    def get_payment_instrument(instrument_id: str) -> Response[InstrumentResource]:
        return _json(200, InstrumentResource.of(service().get(caller(), instrument_id)))

    @router.delete(
        f"{PAYMENT_INSTRUMENTS}/<instrument_id>",
        tags=[TAG],
        enable_validation=True,
        responses=_responses(
            {200: "Deactivated (or already ended); its history is kept"}, 404, 409, problem_model=problem_model
        ),
    )
    def deactivate_payment_instrument(instrument_id: str) -> Response[InstrumentResource]:
        return _json(200, InstrumentResource.of(service().deactivate(caller(), instrument_id)))

    return router


def _not_served_here() -> InstrumentApi:
    raise RuntimeError("payment instrument routes are served by the vault function only")


def instrument_openapi_paths() -> dict[str, Any]:
    """{"paths": ..., "schemas": ...} of the instrument routes, for another function's OpenAPI document. Built on a
    resolver that never handles a request."""
    from billing.api.resources import Problem

    documentation = APIGatewayRestResolver(enable_validation=True)
    documentation.include_router(instrument_routes(_not_served_here, problem_model=Problem))
    document = documentation.get_openapi_schema(title="payment instruments", version="1").model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    return {"paths": document.get("paths", {}), "schemas": document.get("components", {}).get("schemas", {})}


def with_instrument_routes(document: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI document (as a dict) with the instrument routes and their schemas added."""
    fragment = instrument_openapi_paths()
    merged = dict(document)
    merged["paths"] = {**document.get("paths", {}), **fragment["paths"]}
    components = dict(document.get("components", {}))
    components["schemas"] = {**components.get("schemas", {}), **fragment["schemas"]}
    merged["components"] = components
    return merged
