"""The sandbox's ACS (standing in for the directory server too): test cards with fixed 3-D Secure outcomes, and the
one-time-code challenge one of them asks for.

| card             | outcome                                                                                       |
|------------------|-----------------------------------------------------------------------------------------------|
| 4000002760003184 | challenge (C, acsChallengeMandated Y): code 123456 -> Y ECI 05; three wrong codes -> N (01)   |
| 4000000000003220 | frictionless Y, ECI 05                                                                        |
| 4000000000003063 | frictionless A (attempted), ECI 06                                                            |
| 4000008400001629 | R, transStatusReason 11 (suspected fraud)                                                     |
| 4000000000003055 | U, transStatusReason 22 (ACS technical issue)                                                 |
| 5200828282828210 | Mastercard, frictionless Y, ECI 02                                                            |
| any other card   | NotEnrolled: the card range lookup finds no ACS, so no AReq is answered and nothing shifts     |

ECIs come from liability.eci_for by the card's brand; Y and A carry a 20-byte authentication value (CAVV/AAV) from
an injectable random source. The ACS decides alone: the requestor's threeDSRequestorChallengeInd changes nothing
(the challenge card is challenged when asked not to, as a mandate would have it; a frictionless card is never
challenged, even on request).

A challenge is a ChallengeSession, an immutable value the database will keep (to_dict/from_dict); SandboxAcs's
transitions return the next session and what happened. Its end goes to the 3DS Server as an RReq (build_rreq) and
to the browser as the final CRes (build_cres). Pure: no I/O; clock, ids and randomness are injected.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Final, TypeAlias, TypeVar, assert_never
from urllib.parse import urlsplit
from uuid import UUID, uuid4

from billing.authentication.liability import eci_for
from billing.authentication.messages import AReq, CReq, is_browser_safe_url, parse_message
from billing.authentication.protocol import DeviceChannel, MessageCategory, MessageType, MessageVersion
from billing.authentication.states import TransStatus
from billing.authentication.wire import WireMessage
from billing.domain.errors import EmvMessageInvalid
from billing.instruments.brands import CardBrand

Clock: TypeAlias = Callable[[], datetime]
_E = TypeVar("_E", bound=StrEnum)

MESSAGE_VERSION: Final = MessageVersion.V2_2_0
CHALLENGE_CODE: Final = "123456"
CHALLENGE_ATTEMPTS: Final = 3
# Long enough to fetch a code from a phone, short enough that an abandoned challenge ends well inside the engine's
# window for customer action; EMV leaves the ACS its own timeout.
CHALLENGE_TTL: Final = timedelta(minutes=10)
# A CAVV/AAV is 20 bytes, 28 base64 characters.
AUTHENTICATION_VALUE_BYTES: Final = 20
# authenticationType 02, dynamic: the page stands in for a one-time code sent by SMS. (That the sandbox's code never
# changes is a convenience of the test card, not the method it imitates.)
AUTHENTICATION_TYPE: Final = "02"


class SandboxOutcome(StrEnum):
    CHALLENGE = "challenge"
    AUTHENTICATED = "authenticated"
    ATTEMPTED = "attempted"
    REJECTED = "rejected"
    UNAVAILABLE = "unavailable"


SANDBOX_CARDS: Final[Mapping[str, SandboxOutcome]] = MappingProxyType(
    {
        "4000002760003184": SandboxOutcome.CHALLENGE,
        "4000000000003220": SandboxOutcome.AUTHENTICATED,
        "4000000000003063": SandboxOutcome.ATTEMPTED,
        "4000008400001629": SandboxOutcome.REJECTED,
        "4000000000003055": SandboxOutcome.UNAVAILABLE,
        # Mastercard's ECIs differ from Visa's (02 authenticated, not 05): the one card that shows it.
        "5200828282828210": SandboxOutcome.AUTHENTICATED,
    }
)


class TransStatusReason(StrEnum):
    """The transStatusReason values the sandbox sends (EMV 3DS 2.2.0 Table A.1; 22 and 26 are new in 2.2.0)."""

    CARD_AUTHENTICATION_FAILED = "01"
    SUSPECTED_FRAUD = "11"
    TIMED_OUT_AT_ACS = "14"
    # U: the issuer could not authenticate. Not 08 (no card record): an issuer without the card would answer N, and
    # a card no ACS knows at all is the not-enrolled case, which never reaches an ACS.
    ACS_TECHNICAL_ISSUE = "22"
    NOT_PERFORMED_BY_CARDHOLDER = "26"


class ChallengeCancel(StrEnum):
    """challengeCancel of an RReq (EMV 3DS 2.2.0): why a challenge ended without an answer.

    03 is the decoupled timeout and 08 the app SDK's; a browser challenge held by the ACS times out as 05 when the
    browser never posted the first CReq, as 04 otherwise.
    """

    CARDHOLDER_SELECTED_CANCEL = "01"
    TIMED_OUT_AT_ACS = "04"
    FIRST_CREQ_NOT_RECEIVED = "05"


class ChallengeStatus(StrEnum):
    OPEN = "open"
    AUTHENTICATED = "authenticated"
    FAILED = "failed"
    CANCELED = "canceled"
    TIMED_OUT = "timed_out"


class ChallengeProgress(StrEnum):
    """What one transition did; the session says where the challenge now stands."""

    # Still open, nothing decided: the CReq arrived, or expire() came before the deadline.
    WAITING = "waiting"
    # Still open with one attempt fewer.
    WRONG_CODE = "wrong_code"
    # This step ended the challenge: report it (build_rreq) and show it (build_cres).
    ENDED = "ended"
    # Refused: the challenge had ended before, and nothing changed. Its result was reported when it ended.
    ALREADY_ENDED = "already_ended"


@dataclass(frozen=True, slots=True, kw_only=True)
class ChallengeSession:
    """One cardholder challenge, as the ACS holds it between the ARes and the RReq.

    `expected_code` and `authentication_value` are secrets: never in repr(); to_dict() keeps them, so its storage is
    as sensitive as the authentication's own record.
    """

    acs_trans_id: str
    three_ds_server_trans_id: str
    ds_trans_id: str
    message_version: MessageVersion
    brand: CardBrand
    notification_url: str
    expected_code: str = field(repr=False)
    attempts_left: int
    # interactionCounter: the codes the cardholder submitted.
    interactions: int
    created_at: datetime
    expires_at: datetime
    creq_received_at: datetime | None
    status: ChallengeStatus
    ended_at: datetime | None
    authentication_value: str | None = field(repr=False)

    def __post_init__(self) -> None:
        # Checked here so that a row read back from the database holds the same promises as a session just made.
        for moment in (self.created_at, self.expires_at, self.creq_received_at, self.ended_at):
            if moment is not None and moment.utcoffset() is None:
                raise ValueError("a challenge session's times must be timezone-aware")
        if self.expires_at <= self.created_at:
            raise ValueError("a challenge session must expire after it starts")
        if not 0 <= self.attempts_left <= CHALLENGE_ATTEMPTS or self.interactions < 0:
            raise ValueError("a challenge session's attempt counts are out of range")
        if (self.status is ChallengeStatus.OPEN) != (self.ended_at is None):
            raise ValueError("a challenge session has an end time exactly when it has ended")
        if (self.status is ChallengeStatus.AUTHENTICATED) != (self.authentication_value is not None):
            raise ValueError("a challenge session has an authentication value exactly when it authenticated")

    @property
    def ended(self) -> bool:
        return self.status is not ChallengeStatus.OPEN

    @property
    def trans_status(self) -> TransStatus | None:
        """Y or N once ended: cancel and timeout are N too (EMV sends challengeCancel beside an N)."""
        match self.status:
            case ChallengeStatus.OPEN:
                return None
            case ChallengeStatus.AUTHENTICATED:
                return TransStatus.AUTHENTICATED
            case ChallengeStatus.FAILED | ChallengeStatus.CANCELED | ChallengeStatus.TIMED_OUT:
                return TransStatus.NOT_AUTHENTICATED
            case _:
                assert_never(self.status)

    @property
    def trans_status_reason(self) -> TransStatusReason | None:
        match self.status:
            case ChallengeStatus.OPEN | ChallengeStatus.AUTHENTICATED:
                return None
            case ChallengeStatus.FAILED:
                return TransStatusReason.CARD_AUTHENTICATION_FAILED
            case ChallengeStatus.CANCELED:
                # Shown the challenge, the cardholder chose not to take it: not a failed authentication (01).
                return TransStatusReason.NOT_PERFORMED_BY_CARDHOLDER
            case ChallengeStatus.TIMED_OUT:
                return TransStatusReason.TIMED_OUT_AT_ACS
            case _:
                assert_never(self.status)

    @property
    def challenge_cancel(self) -> ChallengeCancel | None:
        match self.status:
            case ChallengeStatus.OPEN | ChallengeStatus.AUTHENTICATED | ChallengeStatus.FAILED:
                return None
            case ChallengeStatus.CANCELED:
                return ChallengeCancel.CARDHOLDER_SELECTED_CANCEL
            case ChallengeStatus.TIMED_OUT:
                # "First CReq not received" only if the cardholder never reached the challenge at all.
                reached = self.creq_received_at is not None or self.interactions > 0
                return ChallengeCancel.TIMED_OUT_AT_ACS if reached else ChallengeCancel.FIRST_CREQ_NOT_RECEIVED
            case _:
                assert_never(self.status)

    @property
    def eci(self) -> str | None:
        return None if self.trans_status is None else eci_for(self.brand, self.trans_status)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready state for the database; from_dict reads it back."""
        return {
            "acs_trans_id": self.acs_trans_id,
            "three_ds_server_trans_id": self.three_ds_server_trans_id,
            "ds_trans_id": self.ds_trans_id,
            "message_version": self.message_version.value,
            "brand": self.brand.value,
            "notification_url": self.notification_url,
            "expected_code": self.expected_code,
            "attempts_left": self.attempts_left,
            "interactions": self.interactions,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "creq_received_at": _isoformat(self.creq_received_at),
            "status": self.status.value,
            "ended_at": _isoformat(self.ended_at),
            "authentication_value": self.authentication_value,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ChallengeSession:
        """The session to_dict wrote; ValueError naming the key (never its value) for anything else."""
        if set(data) != _SESSION_KEYS:
            raise ValueError("a challenge session needs exactly the keys to_dict writes")
        return cls(
            acs_trans_id=_text(data, "acs_trans_id"),
            three_ds_server_trans_id=_text(data, "three_ds_server_trans_id"),
            ds_trans_id=_text(data, "ds_trans_id"),
            message_version=_member(data, "message_version", MessageVersion),
            brand=_member(data, "brand", CardBrand),
            notification_url=_text(data, "notification_url"),
            expected_code=_text(data, "expected_code"),
            attempts_left=_count(data, "attempts_left"),
            interactions=_count(data, "interactions"),
            created_at=_time(data, "created_at"),
            expires_at=_time(data, "expires_at"),
            creq_received_at=_optional_time(data, "creq_received_at"),
            status=_member(data, "status", ChallengeStatus),
            ended_at=_optional_time(data, "ended_at"),
            authentication_value=_optional_text(data, "authentication_value"),
        )


_SESSION_KEYS: Final = frozenset(
    {
        "acs_trans_id",
        "three_ds_server_trans_id",
        "ds_trans_id",
        "message_version",
        "brand",
        "notification_url",
        "expected_code",
        "attempts_left",
        "interactions",
        "created_at",
        "expires_at",
        "creq_received_at",
        "status",
        "ended_at",
        "authentication_value",
    }
)


@dataclass(frozen=True, slots=True)
class ChallengeStep:
    session: ChallengeSession
    progress: ChallengeProgress


@dataclass(frozen=True, slots=True)
class Frictionless:
    """The ARes decided the authentication (Y, A, R or U): no challenge follows."""

    ares: WireMessage


@dataclass(frozen=True, slots=True)
class ChallengeRequired:
    """The ARes asks for a challenge at its acsURL; `session` is the ACS's side of it."""

    ares: WireMessage
    session: ChallengeSession


@dataclass(frozen=True, slots=True, kw_only=True)
class NotEnrolled:
    """No ACS for the card's range: no ARes, so the charge goes on without 3-D Secure and liability stays put."""

    three_ds_server_trans_id: str
    account_last4: str


AcsAnswer: TypeAlias = Frictionless | ChallengeRequired | NotEnrolled


class SandboxAcs:
    """The sandbox ACS. `acs_url` is the challenge page's https base; each challenge is at `<acs_url>/<acsTransID>`.

    `new_id` gives dsTransID then acsTransID for each enrolled card; `random_bytes` the authentication values.
    """

    def __init__(
        self,
        *,
        acs_url: str,
        clock: Clock,
        new_id: Callable[[], UUID] = uuid4,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
        challenge_ttl: timedelta = CHALLENGE_TTL,
    ) -> None:
        parts = urlsplit(acs_url)
        # The engine's parser refuses an acsURL that is not https to a host; fail at wiring, not at the first ARes.
        if not is_browser_safe_url(parts) or parts.query or parts.fragment:
            raise ValueError("acs_url must be an https URL (http only on loopback) without query or fragment")
        if challenge_ttl <= timedelta(0):
            raise ValueError("challenge_ttl must be positive")
        self._acs_url = acs_url.rstrip("/")
        self._clock = clock
        self._new_id = new_id
        self._random_bytes = random_bytes
        self._challenge_ttl = challenge_ttl

    def authenticate(self, areq: WireMessage) -> AcsAnswer:
        """Answer an AReq by the card's row in SANDBOX_CARDS; EmvMessageInvalid for an AReq the sandbox cannot serve."""
        request = _payment_areq(areq)
        # The card range lookup comes first (the DS's PRes ranges, which this table also is): an unlisted card never
        # reaches an ACS.
        outcome = SANDBOX_CARDS.get(areq.members["acctNumber"])
        if outcome is None:
            return NotEnrolled(
                three_ds_server_trans_id=request.three_ds_server_trans_id, account_last4=request.account_last4
            )
        brand = request.account_brand
        assert brand is not None, "every sandbox card has a brand"
        ds_trans_id = str(self._new_id())
        acs_trans_id = str(self._new_id())
        header = {
            "messageType": MessageType.ARES,
            "messageVersion": request.message_version,
            "threeDSServerTransID": request.three_ds_server_trans_id,
            "acsTransID": acs_trans_id,
            "dsTransID": ds_trans_id,
        }
        match outcome:
            case SandboxOutcome.CHALLENGE:
                # Challenged whatever threeDSRequestorChallengeInd asked: a "no challenge" request is a request, and
                # acsChallengeMandated Y tells the requestor why it was not granted.
                ares = WireMessage(
                    {
                        **header,
                        "transStatus": TransStatus.CHALLENGE_REQUIRED,
                        "acsChallengeMandated": "Y",
                        "authenticationType": AUTHENTICATION_TYPE,
                        "acsURL": f"{self._acs_url}/{acs_trans_id}",
                    }
                )
                session = self._open(request, brand, areq.members["notificationURL"], ds_trans_id, acs_trans_id)
                return ChallengeRequired(ares=ares, session=session)
            case SandboxOutcome.AUTHENTICATED | SandboxOutcome.ATTEMPTED:
                status = TransStatus.AUTHENTICATED if outcome is SandboxOutcome.AUTHENTICATED else TransStatus.ATTEMPTED
                return Frictionless(
                    WireMessage(
                        {
                            **header,
                            "transStatus": status,
                            "eci": _eci(brand, status),
                            "authenticationValue": self._authentication_value(),
                        }
                    )
                )
            case SandboxOutcome.REJECTED:
                return Frictionless(_refusal(header, brand, TransStatus.REJECTED, TransStatusReason.SUSPECTED_FRAUD))
            case SandboxOutcome.UNAVAILABLE:
                return Frictionless(
                    _refusal(header, brand, TransStatus.NOT_PERFORMED, TransStatusReason.ACS_TECHNICAL_ISSUE)
                )
            case _:
                assert_never(outcome)

    def receive_creq(self, session: ChallengeSession, creq: WireMessage) -> ChallengeStep:
        """The browser posted the CReq to the acsURL: the challenge page is on screen."""
        request = parse_message(creq.to_json())
        if not isinstance(request, CReq):
            raise EmvMessageInvalid(
                "unexpected_message_type", f"the challenge page reads a CReq, not a {request.message_type}"
            )
        if (request.acs_trans_id, request.three_ds_server_trans_id) != (
            session.acs_trans_id,
            session.three_ds_server_trans_id,
        ):
            raise EmvMessageInvalid("invalid_field:acsTransID", "the CReq is for another challenge")
        now = self._clock()
        if session.ended:
            return ChallengeStep(session, ChallengeProgress.ALREADY_ENDED)
        if now >= session.expires_at:
            return self._end(session, ChallengeStatus.TIMED_OUT, now)
        if session.creq_received_at is None:
            session = replace(session, creq_received_at=now)
        return ChallengeStep(session, ChallengeProgress.WAITING)

    def submit_code(self, session: ChallengeSession, code: str) -> ChallengeStep:
        """The cardholder's code: right -> Y; wrong -> one attempt fewer, and N when none is left."""
        now = self._clock()
        if session.ended:
            return ChallengeStep(session, ChallengeProgress.ALREADY_ENDED)
        # After the deadline even the right code is too late: the ACS has stopped waiting.
        if now >= session.expires_at:
            return self._end(session, ChallengeStatus.TIMED_OUT, now)
        session = replace(session, interactions=session.interactions + 1)
        # Constant time, so response timing tells nothing of how much of a guess was right. Bytes, because
        # compare_digest refuses str with non-ASCII characters, and a cardholder can type any.
        if hmac.compare_digest(code.encode(), session.expected_code.encode()):
            return self._end(session, ChallengeStatus.AUTHENTICATED, now)
        session = replace(session, attempts_left=session.attempts_left - 1)
        if session.attempts_left == 0:
            return self._end(session, ChallengeStatus.FAILED, now)
        return ChallengeStep(session, ChallengeProgress.WRONG_CODE)

    def cancel(self, session: ChallengeSession) -> ChallengeStep:
        """The cardholder chose Cancel on the challenge page."""
        now = self._clock()
        if session.ended:
            return ChallengeStep(session, ChallengeProgress.ALREADY_ENDED)
        # A cancel after the deadline ends nothing the timeout had not already ended.
        status = ChallengeStatus.TIMED_OUT if now >= session.expires_at else ChallengeStatus.CANCELED
        return self._end(session, status, now)

    def expire(self, session: ChallengeSession) -> ChallengeStep:
        """End the challenge if its deadline has passed (a sweeper's call); before it, nothing changes."""
        now = self._clock()
        if session.ended:
            return ChallengeStep(session, ChallengeProgress.ALREADY_ENDED)
        if now < session.expires_at:
            return ChallengeStep(session, ChallengeProgress.WAITING)
        return self._end(session, ChallengeStatus.TIMED_OUT, now)

    def _open(
        self, request: AReq, brand: CardBrand, notification_url: str, ds_trans_id: str, acs_trans_id: str
    ) -> ChallengeSession:
        now = self._clock()
        return ChallengeSession(
            acs_trans_id=acs_trans_id,
            three_ds_server_trans_id=request.three_ds_server_trans_id,
            ds_trans_id=ds_trans_id,
            message_version=request.message_version,
            brand=brand,
            notification_url=notification_url,
            expected_code=CHALLENGE_CODE,
            attempts_left=CHALLENGE_ATTEMPTS,
            interactions=0,
            created_at=now,
            expires_at=now + self._challenge_ttl,
            creq_received_at=None,
            status=ChallengeStatus.OPEN,
            ended_at=None,
            authentication_value=None,
        )

    def _end(self, session: ChallengeSession, status: ChallengeStatus, now: datetime) -> ChallengeStep:
        value = self._authentication_value() if status is ChallengeStatus.AUTHENTICATED else None
        # The value is drawn once, here, and kept: an RReq rebuilt after a reload carries the same cryptogram.
        ended = replace(session, status=status, ended_at=now, authentication_value=value)
        return ChallengeStep(ended, ChallengeProgress.ENDED)

    def _authentication_value(self) -> str:
        raw = self._random_bytes(AUTHENTICATION_VALUE_BYTES)
        if len(raw) != AUTHENTICATION_VALUE_BYTES:
            raise ValueError(f"the random source must give {AUTHENTICATION_VALUE_BYTES} bytes")
        return base64.b64encode(raw).decode("ascii")


def build_rreq(session: ChallengeSession) -> WireMessage:
    """The RReq reporting how the challenge ended; ValueError while it is still open."""
    if session.trans_status is None:
        raise ValueError("an open challenge has no result to report")
    members: dict[str, str] = {
        "messageType": MessageType.RREQ,
        "messageVersion": session.message_version,
        "threeDSServerTransID": session.three_ds_server_trans_id,
        "acsTransID": session.acs_trans_id,
        "dsTransID": session.ds_trans_id,
        # The sandbox authenticates payments only (_payment_areq): the category is known without storing it.
        "messageCategory": MessageCategory.PAYMENT,
        "transStatus": session.trans_status,
        "authenticationType": AUTHENTICATION_TYPE,
        "interactionCounter": f"{session.interactions:02d}",
    }
    optional = {
        "transStatusReason": session.trans_status_reason,
        "eci": session.eci,
        "authenticationValue": session.authentication_value,
        "challengeCancel": session.challenge_cancel,
    }
    members.update({name: value for name, value in optional.items() if value is not None})
    return WireMessage(members)


def build_cres(session: ChallengeSession) -> WireMessage:
    """The final CRes the challenge page posts to the notificationURL; ValueError while the challenge is open."""
    if session.trans_status is None:
        raise ValueError("an open challenge has no final CRes")
    return WireMessage(
        {
            "messageType": MessageType.CRES,
            "messageVersion": session.message_version,
            "threeDSServerTransID": session.three_ds_server_trans_id,
            "acsTransID": session.acs_trans_id,
            "transStatus": session.trans_status,
            "challengeCompletionInd": "Y",
        }
    )


def _payment_areq(areq: WireMessage) -> AReq:
    """The AReq, checked by the engine's own parser, and within what the sandbox serves."""
    request = parse_message(areq.to_json())
    if not isinstance(request, AReq):
        raise EmvMessageInvalid("unexpected_message_type", f"the ACS answers an AReq, not a {request.message_type}")
    if request.message_version is not MESSAGE_VERSION:
        raise EmvMessageInvalid("unsupported_version", f"the sandbox ACS speaks {MESSAGE_VERSION} only")
    if request.message_category is not MessageCategory.PAYMENT:
        raise EmvMessageInvalid("invalid_field:messageCategory", "the sandbox ACS authenticates payments only")
    # The challenge is a web page: an app SDK's challenge (acsSignedContent, ephemeral keys) is not simulated.
    if request.device_channel is not DeviceChannel.BROWSER:
        raise EmvMessageInvalid("invalid_field:deviceChannel", "the sandbox ACS serves the browser channel only")
    if "notificationURL" not in areq.members:
        raise EmvMessageInvalid("missing_field:notificationURL", "AReq has no notificationURL for the browser")
    return request


def _eci(brand: CardBrand, status: TransStatus) -> str:
    eci = eci_for(brand, status)
    assert eci is not None, "every sandbox card's brand has an ECI convention"
    return eci


def _refusal(
    header: Mapping[str, str], brand: CardBrand, status: TransStatus, reason: TransStatusReason
) -> WireMessage:
    return WireMessage({**header, "transStatus": status, "transStatusReason": reason, "eci": _eci(brand, status)})


# --- Reading a stored session back ------------------------------------------------------------------------------------


def _isoformat(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _text(data: Mapping[str, object], key: str) -> str:
    value = data[key]
    if not isinstance(value, str) or not value:
        raise ValueError(f"challenge session {key} is not a non-empty string")
    return value


def _optional_text(data: Mapping[str, object], key: str) -> str | None:
    return None if data[key] is None else _text(data, key)


def _count(data: Mapping[str, object], key: str) -> int:
    value = data[key]
    # bool is an int: True must not read as one attempt.
    if type(value) is not int:
        raise ValueError(f"challenge session {key} is not an integer")
    return value


def _time(data: Mapping[str, object], key: str) -> datetime:
    text = _text(data, key)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    # Raised outside the except block: the parse error quotes the text.
    raise ValueError(f"challenge session {key} is not an ISO 8601 time")


def _optional_time(data: Mapping[str, object], key: str) -> datetime | None:
    return None if data[key] is None else _time(data, key)


def _member(data: Mapping[str, object], key: str, enum: type[_E]) -> _E:
    text = _text(data, key)
    if text not in {member.value for member in enum}:
        raise ValueError(f"challenge session {key} is not a known {enum.__name__}")
    return enum(text)
