"""What a charge tells its provider about 3-D Secure, and what a provider reports of the 3-D Secure it ran.

The risk decision settles whether a customer-initiated card charge needs Strong Customer Authentication. Who runs
it depends on the provider: the sandbox's authentication is run by the engine itself (its 3DS Server talking to the
sandbox ACS, billing.authentication), and the result travels with the authorisation (AUTHENTICATED); Stripe and
Adyen run their own 3DS Server, so the engine asks them to (REQUEST) and reads what they report back
(ProviderAuthentication). An exemption (PSD2 low value, merchant-initiated, transaction risk analysis) asks for
none (EXEMPT): it shifts no liability.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class ThreeDSecureMode(StrEnum):
    # Nothing asked: the provider's own defaults apply (Stripe and Adyen still authenticate when an issuer insists).
    NONE = "none"
    # The provider runs 3-D Secure: Stripe request_three_d_secure=any, Adyen authenticationData.attemptAuthentication.
    REQUEST = "request"
    # An exemption is claimed: no authentication, no liability shift.
    EXEMPT = "exempt"
    # The engine authenticated the cardholder: the ECI and authentication value go with the authorisation.
    AUTHENTICATED = "authenticated"


class Exemption(StrEnum):
    """The PSD2 exemptions from Strong Customer Authentication the engine claims (RTS on SCA)."""

    # Art. 16: under EUR 30, while fewer than 5 such charges or EUR 100 since the customer last authenticated.
    LOW_VALUE = "low_value"
    # Out of scope rather than exempt: the customer is not there (a renewal on an authenticated mandate).
    MERCHANT_INITIATED = "merchant_initiated"
    # Art. 18: the merchant's (here the engine's) transaction risk analysis scored the charge low.
    TRANSACTION_RISK_ANALYSIS = "transaction_risk_analysis"


@dataclass(frozen=True, slots=True)
class AuthenticationData:
    """An authentication the engine ran, as the authorisation carries it. The value is single use: never logged,
    never stored (the database keeps its digest only)."""

    trans_status: str
    eci: str
    authentication_value: str = field(repr=False)
    three_ds_server_trans_id: str
    ds_trans_id: str | None
    message_version: str


@dataclass(frozen=True, slots=True)
class ThreeDSecureInstruction:
    mode: ThreeDSecureMode = ThreeDSecureMode.NONE
    exemption: Exemption | None = None
    data: AuthenticationData | None = None

    def __post_init__(self) -> None:
        if (self.mode is ThreeDSecureMode.EXEMPT) != (self.exemption is not None):
            raise ValueError("an exemption is claimed exactly in EXEMPT mode")
        if (self.mode is ThreeDSecureMode.AUTHENTICATED) != (self.data is not None):
            raise ValueError("authentication data travels exactly in AUTHENTICATED mode")


NO_THREE_DS = ThreeDSecureInstruction()


@dataclass(frozen=True, slots=True)
class ProviderAuthentication:
    """What a provider reports of the 3-D Secure it ran (Stripe's payment_method_details.card.three_d_secure,
    Adyen's additionalData). Every field is None when the provider did not say; an authentication value a
    provider returns is never kept, only whether there was one."""

    # EMV transStatus: Y, A, N, R, U, or C while the customer still has to act.
    trans_status: str | None = None
    eci: str | None = None
    message_version: str | None = None
    # "challenge" or "frictionless".
    flow: str | None = None
    # The provider's own statement (Adyen liabilityShift); None: computed by the engine from the ECI.
    liability_shift: bool | None = None
    # An exemption the provider or issuer applied instead of authenticating.
    exemption: str | None = None
    ds_trans_id: str | None = None
    authentication_value_present: bool = False
