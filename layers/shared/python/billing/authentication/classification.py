"""What an ARes or RReq means for the authentication: its state, ECI, liability shift and whether a challenge follows.

The scheme is a parameter, not read from the message: an ARes names no brand, and the engine knows the
instrument it is authenticating.
"""

from __future__ import annotations

from dataclasses import dataclass

from billing.authentication.liability import LiabilityShift, liability_for_outcome
from billing.authentication.messages import ARes, RReq
from billing.authentication.protocol import MessageType
from billing.authentication.states import AuthenticationState, TransStatus, state_for
from billing.instruments.brands import CardBrand


@dataclass(frozen=True, slots=True, kw_only=True)
class Classified:
    """`liability` is None exactly while a challenge follows: the RReq, not the ARes, decides it then."""

    message_type: MessageType
    trans_status: TransStatus
    trans_status_reason: str | None
    state: AuthenticationState
    eci: str | None
    liability: LiabilityShift | None
    challenge_follows: bool
    decoupled: bool
    has_authentication_value: bool

    @property
    def liability_shifted(self) -> bool:
        return self.liability is not None and self.liability.shifted


def classify(message: ARes | RReq, *, brand: CardBrand) -> Classified:
    """Classify an ARes or RReq for a card of `brand` (the network brand, for a co-branded card)."""
    if not isinstance(message, ARes | RReq):
        raise TypeError(f"only an ARes or an RReq can be classified, not {type(message).__name__}")
    state = state_for(message.trans_status, message_type=message.message_type)
    challenge_follows = state is AuthenticationState.CHALLENGE_REQUIRED
    liability = (
        None
        if challenge_follows
        else liability_for_outcome(
            brand, message.trans_status, message.eci, has_authentication_value=message.has_authentication_value
        )
    )
    return Classified(
        message_type=message.message_type,
        trans_status=message.trans_status,
        trans_status_reason=message.trans_status_reason,
        state=state,
        eci=message.eci,
        liability=liability,
        challenge_follows=challenge_follows,
        decoupled=message.trans_status is TransStatus.DECOUPLED_CHALLENGE,
        has_authentication_value=message.has_authentication_value,
    )
