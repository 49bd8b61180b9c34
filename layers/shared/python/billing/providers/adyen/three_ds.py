"""3-D Secure at Adyen: what a charge's ThreeDSecureInstruction adds to a /payments body, and what Adyen's answer
tells of the authentication it ran. Pure; field names and enums are Checkout v71's OpenAPI document's.

    mode            added to the PaymentRequest
    NONE            nothing: Adyen's Dynamic 3D Secure rules and default exemption handling decide
    REQUEST         authenticationData.attemptAuthentication=always, channel=Web, origin
    EXEMPT          additionalData.scaExemption (lowValue, transactionRiskAnalysis) with attemptAuthentication=never;
                    merchant-initiated: nothing, ContAuth already takes the charge out of SCA's scope
    AUTHENTICATED   mpiData (ThreeDSecureData): cavv, eci, dsTransID, threeDSVersion, directoryResponse,
                    authenticationResponse

What Adyen tells: resultCode IdentifyShopper, ChallengeShopper or RedirectShopper (transStatus C, the shopper still
has to act), and the 3-D Secure keys of additionalData (ResponseAdditionalDataCommon, ResponseAdditionalData3DSecure).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, assert_never
from urllib.parse import urlsplit

from billing.rails.three_ds import (
    AuthenticationData,
    Exemption,
    ProviderAuthentication,
    ThreeDSecureInstruction,
    ThreeDSecureMode,
)

ATTEMPT_ALWAYS: Final = "always"
ATTEMPT_NEVER: Final = "never"
# PaymentRequest.channel for a shopper in a browser; with `origin` it is what Adyen requires of a browser-based
# 3-D Secure 2 transaction.
CHANNEL_WEB: Final = "Web"
# PaymentRequest.origin's maxLength.
MAX_ORIGIN_LENGTH: Final = 80

# AdditionalData3DSecure.scaExemption's documented values for the exemptions the engine claims. Merchant-initiated is
# not among them: it is out of SCA's scope rather than exempt, which shopperInteraction ContAuth already says.
SCA_EXEMPTIONS: Final[Mapping[Exemption, str | None]] = MappingProxyType(
    {
        Exemption.LOW_VALUE: "lowValue",
        Exemption.TRANSACTION_RISK_ANALYSIS: "transactionRiskAnalysis",
        Exemption.MERCHANT_INITIATED: None,
    }
)

# ThreeDSecureData's enums: directoryResponse (the ARes' transStatus) and authenticationResponse (the RReq's).
DIRECTORY_RESPONSES: Final = frozenset({"A", "C", "D", "I", "N", "R", "U", "Y"})
AUTHENTICATION_RESPONSES: Final = frozenset({"Y", "N", "U", "A"})

# resultCodes of a payment waiting for the shopper's 3-D Secure: the device fingerprint (IdentifyShopper), the
# challenge (ChallengeShopper), or a redirect to the issuer's page (RedirectShopper, cards only here).
_AWAITING_AUTHENTICATION: Final = frozenset({"IdentifyShopper", "ChallengeShopper", "RedirectShopper"})
_CHALLENGE_SHOPPER: Final = "ChallengeShopper"
CHALLENGE_PENDING: Final = "C"
# EMV transStatus values an authentication ends with, as threeDAuthenticatedResponse reports them.
_FINAL_TRANS_STATUSES: Final = frozenset({"Y", "A", "N", "R", "U"})
# The additionalData keys that speak of 3-D Secure; an answer without any of them says nothing of it.
_THREE_DS_KEYS: Final = frozenset(
    {
        "threeDAuthenticated",
        "threeDAuthenticatedResponse",
        "threeDOffered",
        "liabilityShift",
        "eci",
        "threeDSVersion",
        "dsTransID",
        "cavv",
        "scaExemptionRequested",
    }
)
# What Adyen puts in a field it has no value for (an ECI of a payment without 3-D Secure).
_NOT_APPLICABLE: Final = "N/A"


def three_ds_fields(instruction: ThreeDSecureInstruction, *, return_url: str) -> dict[str, Any]:
    """The PaymentRequest fields the instruction adds (none for NONE)."""
    match instruction.mode:
        case ThreeDSecureMode.NONE:
            return {}
        case ThreeDSecureMode.REQUEST:
            # No browserInfo and no nativeThreeDS: the engine charges server-side and holds none of the shopper's
            # browser data, so Adyen authenticates through its redirect (its page collects what the issuer needs)
            # and the client follows the action it answers with (NextAction).
            fields: dict[str, Any] = {
                "authenticationData": {"attemptAuthentication": ATTEMPT_ALWAYS},
                "channel": CHANNEL_WEB,
            }
            origin = origin_of(return_url)
            if origin is not None:
                fields["origin"] = origin
            return fields
        case ThreeDSecureMode.EXEMPT:
            assert instruction.exemption is not None  # ThreeDSecureInstruction guarantees it
            exemption = SCA_EXEMPTIONS[instruction.exemption]
            if exemption is None:
                return {}
            # The exemption asked for in the authorisation, without authenticating: Adyen's "executeThreeD false
            # with scaExemption" (attemptAuthentication replaces executeThreeD since v69). An issuer that refuses
            # the exemption declines (soft decline): the charge fails, and a new one can ask for 3-D Secure.
            return {
                "authenticationData": {"attemptAuthentication": ATTEMPT_NEVER},
                "additionalData": {"scaExemption": exemption},
            }
        case ThreeDSecureMode.AUTHENTICATED:
            assert instruction.data is not None  # ThreeDSecureInstruction guarantees it
            return {"mpiData": mpi_data(instruction.data)}
        case _:
            assert_never(instruction.mode)


def mpi_data(data: AuthenticationData) -> dict[str, str]:
    """The engine's authentication as ThreeDSecureData (an authentication by a third-party 3DS Server). The cavv is
    the single-use authentication value: it goes in this request only."""
    mpi = {"cavv": data.authentication_value, "eci": data.eci, "threeDSVersion": data.message_version}
    if data.ds_trans_id:
        mpi["dsTransID"] = data.ds_trans_id
    # AuthenticationData keeps the final transStatus only, not whether a challenge came between: it stands for the
    # ARes' (frictionless) and the RReq's (challenge) alike, where the enums take it.
    if data.trans_status in DIRECTORY_RESPONSES:
        mpi["directoryResponse"] = data.trans_status
    if data.trans_status in AUTHENTICATION_RESPONSES:
        mpi["authenticationResponse"] = data.trans_status
    return mpi


def origin_of(url: str) -> str | None:
    """The web origin (scheme://host[:port]) of the shop's return URL, where its checkout page runs; None when the
    URL has none or it would not fit Adyen's 80 characters."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        return None
    origin = f"{parts.scheme}://{parts.netloc}"
    return origin if len(origin) <= MAX_ORIGIN_LENGTH else None


def authentication_for(response: Mapping[str, Any]) -> ProviderAuthentication | None:
    """What a PaymentResponse tells of 3-D Secure; None when it says nothing."""
    result_code = response.get("resultCode")
    if result_code in _AWAITING_AUTHENTICATION:
        flow = "challenge" if result_code == _CHALLENGE_SHOPPER else None
        return ProviderAuthentication(trans_status=CHALLENGE_PENDING, flow=flow)
    additional = response.get("additionalData")
    if not isinstance(additional, Mapping) or not _THREE_DS_KEYS.intersection(additional):
        return None
    authenticated = _flag(additional.get("threeDAuthenticated"))
    raw_status = _value(additional.get("threeDAuthenticatedResponse"))
    if raw_status in _FINAL_TRANS_STATUSES:
        trans_status: str | None = raw_status
    else:
        # Only "authenticated" is unambiguous without the raw result: not authenticated may be a failure, an
        # attempt or an exemption.
        trans_status = "Y" if authenticated else None
    exemption = _value(additional.get("scaExemptionRequested"))
    return ProviderAuthentication(
        trans_status=trans_status,
        eci=_value(additional.get("eci")),
        message_version=_value(additional.get("threeDSVersion")),
        liability_shift=_flag(additional.get("liabilityShift")),
        # Adyen reports the exemption it asked for; without an authentication it is what the issuer let through.
        exemption=exemption if not authenticated else None,
        ds_trans_id=_value(additional.get("dsTransID")),
        # The cavv itself is never kept: only that Adyen had one.
        authentication_value_present=_value(additional.get("cavv")) is not None,
    )


def _flag(value: object) -> bool | None:
    """additionalData's booleans are strings ("true", "false"); anything else is no answer."""
    if value == "true":
        return True
    if value == "false":
        return False
    return None


def _value(value: object) -> str | None:
    return value if isinstance(value, str) and value and value != _NOT_APPLICABLE else None
