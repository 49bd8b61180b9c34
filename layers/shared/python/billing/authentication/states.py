"""The 3-D Secure authentication state machine, EMV transStatus, and which transStatus moves it where.

An authentication starts when the AReq goes out; the ARes either ends it (frictionless) or asks for a challenge,
whose outcome arrives in the RReq. `expired` is the one state no message leads to: the ARes or the RReq never came.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import assert_never

from billing.authentication.protocol import MessageType, MessageVersion
from billing.domain.errors import EmvMessageInvalid


class AuthenticationState(StrEnum):
    STARTED = "started"
    CHALLENGE_REQUIRED = "challenge_required"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    UNAVAILABLE = "unavailable"
    EXPIRED = "expired"


A = AuthenticationState
_OUTCOMES = frozenset({A.SUCCEEDED, A.FAILED, A.REJECTED, A.UNAVAILABLE, A.EXPIRED})

# The only moves an authentication makes. A challenge cannot be asked for twice (the RReq is final), and no final
# state is ever left: a second ARes or RReq for the same transaction is a replay, not news.
ALLOWED_TRANSITIONS: Mapping[AuthenticationState, frozenset[AuthenticationState]] = MappingProxyType(
    {
        A.STARTED: _OUTCOMES | {A.CHALLENGE_REQUIRED},
        A.CHALLENGE_REQUIRED: _OUTCOMES,
        A.SUCCEEDED: frozenset(),
        A.FAILED: frozenset(),
        A.REJECTED: frozenset(),
        A.UNAVAILABLE: frozenset(),
        A.EXPIRED: frozenset(),
    }
)


def can_move(old: AuthenticationState, new: AuthenticationState) -> bool:
    """True if old -> new is one of the allowed transitions."""
    return new in ALLOWED_TRANSITIONS[old]


def is_final(state: AuthenticationState) -> bool:
    """A final authentication never changes again."""
    match state:
        case A.SUCCEEDED | A.FAILED | A.REJECTED | A.UNAVAILABLE | A.EXPIRED:
            return True
        case A.STARTED | A.CHALLENGE_REQUIRED:
            return False
        case _:
            assert_never(state)


class TransStatus(StrEnum):
    """transStatus of an ARes, RReq or CRes (EMV 3DS 2.2.0 Table A.1)."""

    AUTHENTICATED = "Y"
    NOT_AUTHENTICATED = "N"
    NOT_PERFORMED = "U"
    ATTEMPTED = "A"
    CHALLENGE_REQUIRED = "C"
    DECOUPLED_CHALLENGE = "D"
    REJECTED = "R"
    INFORMATIONAL = "I"

    @property
    def meaning(self) -> str:
        """The specification's wording, for logs and operators."""
        return _MEANINGS[self]


T = TransStatus
_MEANINGS: Mapping[TransStatus, str] = MappingProxyType(
    {
        T.AUTHENTICATED: "authentication verification successful",
        T.NOT_AUTHENTICATED: "not authenticated or account not verified; transaction denied",
        T.NOT_PERFORMED: "authentication or account verification could not be performed (technical or other problem)",
        T.ATTEMPTED: "attempts processing performed; not authenticated or verified, but proof of attempt provided",
        T.CHALLENGE_REQUIRED: "challenge required; additional authentication is required",
        T.DECOUPLED_CHALLENGE: "challenge required; decoupled authentication confirmed",
        T.REJECTED: "authentication or account verification rejected; the issuer rejects it, do not authorise",
        T.INFORMATIONAL: "informational only; the 3DS Requestor's challenge preference acknowledged",
    }
)

# Which transStatus each message may carry. An RReq reports how a challenge ended, so it can neither ask for one
# (C, D) nor be merely informational (I); a final CRes only says whether the challenge passed.
_ARES_STATUSES = frozenset(TransStatus)
_RREQ_STATUSES = frozenset({T.AUTHENTICATED, T.NOT_AUTHENTICATED, T.NOT_PERFORMED, T.ATTEMPTED, T.REJECTED})
_CRES_STATUSES = frozenset({T.AUTHENTICATED, T.NOT_AUTHENTICATED})
_SINCE_2_2_0 = frozenset({T.DECOUPLED_CHALLENGE, T.INFORMATIONAL})


def trans_statuses_allowed(message_type: MessageType, version: MessageVersion) -> frozenset[TransStatus]:
    """The transStatus values a message of this type and protocol version may carry (empty: it carries none)."""
    match message_type:
        case MessageType.ARES:
            allowed = _ARES_STATUSES
        case MessageType.RREQ:
            allowed = _RREQ_STATUSES
        case MessageType.CRES:
            allowed = _CRES_STATUSES
        case MessageType.AREQ | MessageType.CREQ | MessageType.RRES | MessageType.ERRO:
            return frozenset()
        case _:
            assert_never(message_type)
    return allowed if version.has_decoupled_and_informational else allowed - _SINCE_2_2_0


def state_for(trans_status: TransStatus, *, message_type: MessageType) -> AuthenticationState:
    """The state an ARes or RReq with this transStatus moves the authentication to.

    I (informational only) counts as succeeded: the issuer acknowledged a "no challenge, please" request (exemption,
    SCA already done, data share) and the payment may go to authorisation, but it was not authenticated here, so
    its ECI (07/00) never shifts liability. D is a challenge like C, held out of band by the ACS; the RReq still
    ends it. U is unavailable, not failed: nothing was decided about the cardholder.
    """
    if message_type is MessageType.RREQ and trans_status not in _RREQ_STATUSES:
        raise EmvMessageInvalid(
            "invalid_field:transStatus", f"an RReq reports how a challenge ended; transStatus {trans_status} cannot"
        )
    if message_type not in (MessageType.ARES, MessageType.RREQ):
        raise ValueError(f"only an ARes or an RReq moves an authentication, not a {message_type}")
    match trans_status:
        case T.AUTHENTICATED | T.ATTEMPTED | T.INFORMATIONAL:
            return A.SUCCEEDED
        case T.NOT_AUTHENTICATED:
            return A.FAILED
        case T.REJECTED:
            return A.REJECTED
        case T.NOT_PERFORMED:
            return A.UNAVAILABLE
        case T.CHALLENGE_REQUIRED | T.DECOUPLED_CHALLENGE:
            return A.CHALLENGE_REQUIRED
        case _:
            assert_never(trans_status)
