"""EMV 3-D Secure 2.x messages parsed into frozen dataclasses holding what the engine needs, nothing more.

parse_message takes the JSON (bytes, text or an already decoded object), unwraps a `{"body": "<base64url JSON>"}`
envelope, and returns one of AReq, ARes, RReq, RRes, CReq, CRes or EmvError, or raises EmvMessageInvalid with a
stable reason. Checks are the specification's where the engine relies on them (identifiers, transStatus per message
and version, ECI and amount shapes, a way into the challenge), so a message that parses can be acted on.

Card data never survives parsing: an AReq's acctNumber is reduced to its last four digits and brand, and an
authenticationValue (the cryptogram that proves the authentication to the issuer) is kept only in a field repr()
skips. No error message quotes a field's value; the few that quote anything quote a bounded messageType or
messageVersion.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import ClassVar, Final, NoReturn, TypeAlias, assert_never
from urllib.parse import SplitResult, urlsplit

from billing.authentication.currency_numbers import alpha_currency
from billing.authentication.protocol import DeviceChannel, MessageCategory, MessageType, MessageVersion
from billing.authentication.states import TransStatus, trans_statuses_allowed
from billing.domain.errors import EmvMessageInvalid
from billing.domain.money import MAX_AMOUNT_MINOR, Money, currency_exponent
from billing.instruments.brands import CardBrand, brand_of

_UUID: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_TWO_DIGITS: Final = re.compile(r"[0-9]{2}")
# Two digits for payments; Mastercard reports non-payment authentications as N0 (not authenticated), N1
# (attempted) and N2 (authenticated). Anything else, "5" or "005" included, is not an ECI.
_ECI: Final = re.compile(r"[0-9]{2}|N[0-2]")
_PAN: Final = re.compile(r"[0-9]{13,19}")
_AMOUNT: Final = re.compile(r"[0-9]{1,48}")
_CURRENCY_NUMBER: Final = re.compile(r"[0-9]{3}")
_EXPONENT: Final = re.compile(r"[0-9]")
_ERROR_CODE: Final = re.compile(r"[0-9]{3}")
# Base64 (28 characters for the 20-byte CAVV/AAV); bounded so a runaway value is refused, not stored.
_AUTHENTICATION_VALUE: Final = re.compile(r"[A-Za-z0-9+/]{4,200}={0,2}")
_BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]*={0,2}")
# acsSignedContent is a JWS in compact serialisation (header.payload.signature); its x5c chain makes it ~9 KB.
_JWS: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_MAX_JWS: Final = 65536
_YES_NO: Final = {"Y": True, "N": False}
_ERROR_COMPONENTS: Final = frozenset({"C", "S", "D", "A"})
_MAX_URL: Final = 2048
_MAX_TEXT: Final = 2048
_MAX_MESSAGE_TYPE: Final = 4
# Enough of an unrecognised messageType or messageVersion to tell what arrived, and shorter than any card number.
_SHOWN: Final = 8
# Membership is checked before an enum is built: the ValueError of a failed lookup quotes the value, and an
# exception raised while handling it would carry it along.
_MESSAGE_TYPES: Final = frozenset(MessageType)
_VERSIONS: Final = frozenset(MessageVersion)
_TRANS_STATUSES: Final = frozenset(TransStatus)
_CATEGORIES: Final = frozenset(MessageCategory)
_DEVICE_CHANNELS: Final = frozenset(DeviceChannel)


@dataclass(frozen=True, slots=True, kw_only=True)
class AReq:
    """Authentication request. `purchase` is None for a non-payment authentication that names no amount."""

    message_type: ClassVar[MessageType] = MessageType.AREQ
    message_version: MessageVersion
    three_ds_server_trans_id: str
    ds_trans_id: str | None
    message_category: MessageCategory
    device_channel: DeviceChannel
    challenge_indicator: str | None
    purchase: Money | None
    account_last4: str
    account_brand: CardBrand | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ARes:
    """Authentication response: the outcome of a frictionless flow, or the way into a challenge."""

    message_type: ClassVar[MessageType] = MessageType.ARES
    message_version: MessageVersion
    three_ds_server_trans_id: str
    acs_trans_id: str
    ds_trans_id: str
    trans_status: TransStatus
    trans_status_reason: str | None
    eci: str | None
    authentication_value: str | None = field(repr=False)
    acs_challenge_mandated: bool | None
    acs_url: str | None
    # The app channel's way into the challenge (a JWS with the ACS URL and ephemeral key): long, so kept out of repr.
    acs_signed_content: str | None = field(repr=False)

    @property
    def has_authentication_value(self) -> bool:
        return self.authentication_value is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class RReq:
    """Results request: how a challenge ended, sent by the ACS through the DS."""

    message_type: ClassVar[MessageType] = MessageType.RREQ
    message_version: MessageVersion
    three_ds_server_trans_id: str
    acs_trans_id: str
    ds_trans_id: str
    message_category: MessageCategory
    trans_status: TransStatus
    trans_status_reason: str | None
    eci: str | None
    authentication_value: str | None = field(repr=False)
    challenge_cancel: str | None

    @property
    def has_authentication_value(self) -> bool:
        return self.authentication_value is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class RRes:
    """Results response: the 3DS Server's acknowledgement of an RReq."""

    message_type: ClassVar[MessageType] = MessageType.RRES
    message_version: MessageVersion
    three_ds_server_trans_id: str
    acs_trans_id: str
    ds_trans_id: str
    results_status: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CReq:
    """Challenge request, posted by the browser or the SDK to the ACS."""

    message_type: ClassVar[MessageType] = MessageType.CREQ
    message_version: MessageVersion
    three_ds_server_trans_id: str
    acs_trans_id: str
    challenge_window_size: str | None
    challenge_cancel: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class CRes:
    """Challenge response. Its transStatus only tells the browser or SDK; the RReq is what the engine acts on."""

    message_type: ClassVar[MessageType] = MessageType.CRES
    message_version: MessageVersion
    three_ds_server_trans_id: str
    acs_trans_id: str
    trans_status: TransStatus | None


@dataclass(frozen=True, slots=True, kw_only=True)
class EmvError:
    """An Erro message: a component (C SDK, S 3DS Server, D DS, A ACS) refusing a message it received."""

    message_type: ClassVar[MessageType] = MessageType.ERRO
    message_version: MessageVersion
    error_code: str
    error_description: str
    error_component: str | None
    error_detail: str | None
    error_message_type: str | None
    three_ds_server_trans_id: str | None
    acs_trans_id: str | None
    ds_trans_id: str | None


EmvMessage: TypeAlias = AReq | ARes | RReq | RRes | CReq | CRes | EmvError


def parse_message(raw: bytes | str | Mapping[str, object]) -> EmvMessage:
    """The EMV message in `raw`, or EmvMessageInvalid saying which rule it breaks."""
    document = _unwrap(raw if isinstance(raw, Mapping) else _json_object(raw))
    message_type = _message_type(document)
    fields = _Fields(document, message_type)
    match message_type:
        case MessageType.AREQ:
            return _areq(fields)
        case MessageType.ARES:
            return _ares(fields)
        case MessageType.RREQ:
            return _rreq(fields)
        case MessageType.RRES:
            return _rres(fields)
        case MessageType.CREQ:
            return _creq(fields)
        case MessageType.CRES:
            return _cres(fields)
        case MessageType.ERRO:
            return _erro(fields)
        case _:
            assert_never(message_type)


# --- Decoding ---------------------------------------------------------------------------------------------------------


class _DuplicateMember(ValueError):
    pass


def _unique_members(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # Two transStatus (or two acsURL) members would let whoever reads the message last see another outcome.
    document = dict(pairs)
    if len(document) != len(pairs):
        raise _DuplicateMember
    return document


def _no_constant(name: str) -> NoReturn:
    raise ValueError(name)


def _json_object(raw: bytes | str) -> Mapping[str, object]:
    document, problem = _loads(raw)
    if problem is not None:
        # Raised outside the except blocks on purpose: a JSONDecodeError or UnicodeDecodeError keeps the whole input
        # (a PAN, a cryptogram) as an attribute, and an exception raised while handling one would chain to it.
        raise EmvMessageInvalid("malformed_json", problem)
    if not isinstance(document, dict):
        raise EmvMessageInvalid("malformed_json", "the message is not a JSON object")
    return document


def _loads(raw: bytes | str) -> tuple[object, str | None]:
    """The decoded JSON, or why there is none."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        document = json.loads(text, object_pairs_hook=_unique_members, parse_float=Decimal, parse_constant=_no_constant)
        return document, None
    except UnicodeDecodeError:
        return None, "the message is not UTF-8 text"
    except _DuplicateMember:
        return None, "the message repeats a member"
    except (ValueError, RecursionError):
        return None, "the message is not JSON"


def _unwrap(document: Mapping[str, object]) -> Mapping[str, object]:
    """The message inside a `{"body": "<base64url JSON>"}` envelope, or the document itself."""
    if set(document) != {"body"}:
        return document
    body = document["body"]
    if not isinstance(body, str) or not _BASE64URL.fullmatch(body):
        raise EmvMessageInvalid("malformed_base64", "the body is not base64url text")
    unpadded = body.rstrip("=")
    # Padding is optional in base64url (JOSE omits it): restore it rather than insist on it.
    try:
        decoded: bytes | None = base64.urlsafe_b64decode(unpadded + "=" * (-len(unpadded) % 4))
    except (binascii.Error, ValueError):
        decoded = None
    if decoded is None:
        raise EmvMessageInvalid("malformed_base64", "the body does not decode as base64url")
    return _json_object(decoded)


def _message_type(document: Mapping[str, object]) -> MessageType:
    value = document.get("messageType")
    if value is None:
        raise EmvMessageInvalid("missing_field:messageType", "the message has no messageType")
    if not isinstance(value, str) or value not in _MESSAGE_TYPES:
        raise EmvMessageInvalid("unknown_message_type", f"messageType {_shown(value)} is none the engine reads")
    return MessageType(value)


def _shown(value: object) -> str:
    if isinstance(value, str):
        return repr(value) if len(value) <= _SHOWN else f"of {len(value)} characters"
    return f"of type {type(value).__name__}"


class _Fields:
    """Typed reads of one message's members; every refusal names the member, never its value."""

    def __init__(self, document: Mapping[str, object], message_type: MessageType) -> None:
        self._document = document
        self.message_type = message_type
        self.version = self._version()

    def _version(self) -> MessageVersion:
        value = self._document.get("messageVersion")
        if value is None:
            self.missing("messageVersion")
        if not isinstance(value, str) or value not in _VERSIONS:
            supported = ", ".join(MessageVersion)
            raise EmvMessageInvalid(
                "unsupported_version",
                f"{self.message_type} messageVersion {_shown(value)} is not one of {supported}",
            )
        return MessageVersion(value)

    def missing(self, name: str, why: str = "") -> NoReturn:
        raise EmvMessageInvalid(f"missing_field:{name}", f"{self.message_type} has no {name}{why}")

    def invalid(self, name: str, why: str) -> NoReturn:
        raise EmvMessageInvalid(f"invalid_field:{name}", f"{self.message_type} {name} {why}")

    def text(self, name: str, *, required: bool, pattern: re.Pattern[str] | None = None, max_length: int = 0) -> str:
        """A string member; absent -> missing_field (or "" when not required, see `optional`)."""
        value = self._document.get(name)
        if value is None:
            if name in self._document:
                # The specification sends no nulls; a null where a value belongs is a malformed member, not an absence.
                self.invalid(name, "is null")
            if required:
                self.missing(name)
            return ""
        if not isinstance(value, str) or not value:
            self.invalid(name, "is not a non-empty string")
        if max_length and len(value) > max_length:
            self.invalid(name, f"is longer than {max_length} characters")
        if pattern is not None and not pattern.fullmatch(value):
            self.invalid(name, "does not have the specified format")
        return value

    def required(self, name: str, pattern: re.Pattern[str] | None = None, *, max_length: int = 0) -> str:
        return self.text(name, required=True, pattern=pattern, max_length=max_length)

    def optional(self, name: str, pattern: re.Pattern[str] | None = None, *, max_length: int = 0) -> str | None:
        return self.text(name, required=False, pattern=pattern, max_length=max_length) or None

    def has(self, name: str) -> bool:
        return name in self._document

    def trans_id(self, name: str) -> str:
        return self.required(name, _UUID)

    def optional_trans_id(self, name: str) -> str | None:
        return self.optional(name, _UUID)

    def trans_status(self, *, required: bool) -> TransStatus | None:
        value = self.text("transStatus", required=required)
        if not value:
            return None
        if value not in _TRANS_STATUSES:
            self.invalid("transStatus", "is not an EMV transStatus")
        status = TransStatus(value)
        if status not in trans_statuses_allowed(self.message_type, self.version):
            self.invalid("transStatus", f"{status} is not allowed in a {self.message_type} of {self.version}")
        return status

    def category(self) -> MessageCategory:
        value = self.required("messageCategory", _TWO_DIGITS)
        if value not in _CATEGORIES:
            self.invalid("messageCategory", "is neither payment (01) nor non-payment (02)")
        return MessageCategory(value)

    def yes_no(self, name: str) -> bool | None:
        value = self.optional(name)
        if value is None:
            return None
        if value not in _YES_NO:
            self.invalid(name, "is neither Y nor N")
        return _YES_NO[value]

    def https_url(self, name: str) -> str | None:
        value = self.optional(name, max_length=_MAX_URL)
        if value is None:
            return None
        # The browser is sent to this URL with the cardholder's challenge: only ever over TLS, only ever to a host.
        try:
            parts = urlsplit(value)
        except ValueError:
            parts = None
        if parts is None or not is_browser_safe_url(parts):
            self.invalid(name, "is not an https URL")
        return value


# The local stack serves the sandbox ACS over plain HTTP on the loopback interface; no real ACS is ever there.
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "::1", "localhost"})


def is_browser_safe_url(parts: SplitResult) -> bool:
    """https to a host; or http to this machine's loopback, where only the local stack listens."""
    if not parts.hostname:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS)


# --- One parser per message type --------------------------------------------------------------------------------------


def _areq(f: _Fields) -> AReq:
    category = f.category()
    # Only the last four digits and the brand outlive this function; the number itself is never stored.
    pan = f.required("acctNumber", _PAN)
    return AReq(
        message_version=f.version,
        three_ds_server_trans_id=f.trans_id("threeDSServerTransID"),
        ds_trans_id=f.optional_trans_id("dsTransID"),
        message_category=category,
        device_channel=_device_channel(f),
        challenge_indicator=f.optional("threeDSRequestorChallengeInd", _TWO_DIGITS),
        purchase=_purchase(f, category),
        account_last4=pan[-4:],
        account_brand=brand_of(pan),
    )


def _device_channel(f: _Fields) -> DeviceChannel:
    value = f.required("deviceChannel", _TWO_DIGITS)
    if value not in _DEVICE_CHANNELS:
        f.invalid("deviceChannel", "is none of app (01), browser (02), requestor initiated (03)")
    return DeviceChannel(value)


_PURCHASE_FIELDS: Final = ("purchaseAmount", "purchaseCurrency", "purchaseExponent")


def _purchase(f: _Fields, category: MessageCategory) -> Money | None:
    """The purchase as Money: integer minor units, never a float, refused rather than rescaled if it disagrees."""
    present = [name for name in _PURCHASE_FIELDS if f.has(name)]
    if not present and category is MessageCategory.NON_PAYMENT:
        return None
    for name in _PURCHASE_FIELDS:
        if name not in present:
            f.missing(name, ": a payment names its purchase" if not present else ": the purchase fields come together")
    amount = int(f.required("purchaseAmount", _AMOUNT))
    number = f.required("purchaseCurrency", _CURRENCY_NUMBER)
    exponent = int(f.required("purchaseExponent", _EXPONENT))
    currency = alpha_currency(number)
    if currency is None:
        f.invalid("purchaseCurrency", "is no current ISO 4217 currency")
    # An exponent other than ISO's would make the same digits mean 100x more or less: refuse, never rescale.
    if exponent != currency_exponent(currency):
        f.invalid("purchaseExponent", f"does not match {currency}'s ISO 4217 minor unit")
    if amount > MAX_AMOUNT_MINOR:
        f.invalid("purchaseAmount", "exceeds the largest amount the engine accepts")
    return Money(amount, currency)


def _ares(f: _Fields) -> ARes:
    status = f.trans_status(required=True)
    assert status is not None
    acs_url = f.https_url("acsURL")
    acs_signed_content = f.optional("acsSignedContent", _JWS, max_length=_MAX_JWS)
    # A browser enters the challenge at acsURL, an app SDK through acsSignedContent; a C with neither is a dead end.
    if status is TransStatus.CHALLENGE_REQUIRED and acs_url is None and acs_signed_content is None:
        f.missing("acsURL", " (nor acsSignedContent) for a challenge")
    return ARes(
        message_version=f.version,
        three_ds_server_trans_id=f.trans_id("threeDSServerTransID"),
        acs_trans_id=f.trans_id("acsTransID"),
        ds_trans_id=f.trans_id("dsTransID"),
        trans_status=status,
        trans_status_reason=f.optional("transStatusReason", _TWO_DIGITS),
        eci=f.optional("eci", _ECI),
        authentication_value=f.optional("authenticationValue", _AUTHENTICATION_VALUE),
        acs_challenge_mandated=f.yes_no("acsChallengeMandated"),
        acs_url=acs_url,
        acs_signed_content=acs_signed_content,
    )


def _rreq(f: _Fields) -> RReq:
    status = f.trans_status(required=True)
    assert status is not None
    category = f.category()
    authentication_value = f.optional("authenticationValue", _AUTHENTICATION_VALUE)
    # The ARes cannot say whether it is a payment; the RReq can, and a successful payment challenge without the
    # cryptogram could not be authorised as authenticated.
    if (
        category is MessageCategory.PAYMENT
        and status in (TransStatus.AUTHENTICATED, TransStatus.ATTEMPTED)
        and authentication_value is None
    ):
        f.missing("authenticationValue", f" for a payment with transStatus {status}")
    return RReq(
        message_version=f.version,
        three_ds_server_trans_id=f.trans_id("threeDSServerTransID"),
        acs_trans_id=f.trans_id("acsTransID"),
        ds_trans_id=f.trans_id("dsTransID"),
        message_category=category,
        trans_status=status,
        trans_status_reason=f.optional("transStatusReason", _TWO_DIGITS),
        eci=f.optional("eci", _ECI),
        authentication_value=authentication_value,
        challenge_cancel=f.optional("challengeCancel", _TWO_DIGITS),
    )


def _rres(f: _Fields) -> RRes:
    return RRes(
        message_version=f.version,
        three_ds_server_trans_id=f.trans_id("threeDSServerTransID"),
        acs_trans_id=f.trans_id("acsTransID"),
        ds_trans_id=f.trans_id("dsTransID"),
        results_status=f.required("resultsStatus", _TWO_DIGITS),
    )


def _creq(f: _Fields) -> CReq:
    return CReq(
        message_version=f.version,
        three_ds_server_trans_id=f.trans_id("threeDSServerTransID"),
        acs_trans_id=f.trans_id("acsTransID"),
        challenge_window_size=f.optional("challengeWindowSize", _TWO_DIGITS),
        challenge_cancel=f.optional("challengeCancel", _TWO_DIGITS),
    )


def _cres(f: _Fields) -> CRes:
    return CRes(
        message_version=f.version,
        three_ds_server_trans_id=f.trans_id("threeDSServerTransID"),
        acs_trans_id=f.trans_id("acsTransID"),
        trans_status=f.trans_status(required=False),
    )


def _erro(f: _Fields) -> EmvError:
    component = f.optional("errorComponent")
    if component is not None and component not in _ERROR_COMPONENTS:
        f.invalid("errorComponent", "is none of C, S, D, A")
    return EmvError(
        message_version=f.version,
        error_code=f.required("errorCode", _ERROR_CODE),
        error_description=f.required("errorDescription", max_length=_MAX_TEXT),
        error_component=component,
        error_detail=f.optional("errorDetail", max_length=_MAX_TEXT),
        error_message_type=f.optional("errorMessageType", max_length=_MAX_MESSAGE_TYPE),
        three_ds_server_trans_id=f.optional_trans_id("threeDSServerTransID"),
        acs_trans_id=f.optional_trans_id("acsTransID"),
        ds_trans_id=f.optional_trans_id("dsTransID"),
    )
