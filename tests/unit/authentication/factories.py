"""Builders for EMV 3DS messages as they arrive on the wire, so each test states only the member it is about.

Pass a member as None to leave it out of the message.
"""

from __future__ import annotations

import base64
import json
from typing import Any

SERVER_TRANS_ID = "8a880dc0-d2d2-4067-bcb1-b08d1690b26e"
ACS_TRANS_ID = "d7c1ee99-9478-44a6-b1f2-391e29c6b340"
DS_TRANS_ID = "f25084f0-5b16-4c0a-ae5d-b24808a95e4b"
# A Luhn-valid Mastercard test number and a 28-character cryptogram: what must never leak.
PAN = "5204240438720050"
AUTHENTICATION_VALUE = "kJMZRiDunhPsBwAU0hu9rrx0eWN6"


def _message(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = {**base, **overrides}
    return {name: value for name, value in merged.items() if value is not None}


def areq(**overrides: Any) -> dict[str, Any]:
    base = {
        "messageType": "AReq",
        "messageVersion": "2.2.0",
        "threeDSServerTransID": SERVER_TRANS_ID,
        "messageCategory": "01",
        "deviceChannel": "02",
        "threeDSRequestorChallengeInd": "01",
        "acctNumber": PAN,
        "purchaseAmount": "1250",
        "purchaseCurrency": "978",
        "purchaseExponent": "2",
    }
    return _message(base, overrides)


def ares(**overrides: Any) -> dict[str, Any]:
    base = {
        "messageType": "ARes",
        "messageVersion": "2.2.0",
        "threeDSServerTransID": SERVER_TRANS_ID,
        "acsTransID": ACS_TRANS_ID,
        "dsTransID": DS_TRANS_ID,
        "transStatus": "Y",
        "eci": "05",
        "authenticationValue": AUTHENTICATION_VALUE,
    }
    return _message(base, overrides)


def challenge_ares(**overrides: Any) -> dict[str, Any]:
    return ares(
        **{
            "transStatus": "C",
            "eci": None,
            "authenticationValue": None,
            "acsChallengeMandated": "Y",
            "acsURL": "https://acs.example.com/challenge",
            **overrides,
        }
    )


def rreq(**overrides: Any) -> dict[str, Any]:
    base = {
        "messageType": "RReq",
        "messageVersion": "2.2.0",
        "threeDSServerTransID": SERVER_TRANS_ID,
        "acsTransID": ACS_TRANS_ID,
        "dsTransID": DS_TRANS_ID,
        "messageCategory": "01",
        "transStatus": "Y",
        "eci": "05",
        "authenticationValue": AUTHENTICATION_VALUE,
    }
    return _message(base, overrides)


def rres(**overrides: Any) -> dict[str, Any]:
    base = {
        "messageType": "RRes",
        "messageVersion": "2.2.0",
        "threeDSServerTransID": SERVER_TRANS_ID,
        "acsTransID": ACS_TRANS_ID,
        "dsTransID": DS_TRANS_ID,
        "resultsStatus": "01",
    }
    return _message(base, overrides)


def creq(**overrides: Any) -> dict[str, Any]:
    base = {
        "messageType": "CReq",
        "messageVersion": "2.2.0",
        "threeDSServerTransID": SERVER_TRANS_ID,
        "acsTransID": ACS_TRANS_ID,
        "challengeWindowSize": "05",
    }
    return _message(base, overrides)


def cres(**overrides: Any) -> dict[str, Any]:
    base = {
        "messageType": "CRes",
        "messageVersion": "2.2.0",
        "threeDSServerTransID": SERVER_TRANS_ID,
        "acsTransID": ACS_TRANS_ID,
        "transStatus": "Y",
    }
    return _message(base, overrides)


def erro(**overrides: Any) -> dict[str, Any]:
    base = {
        "messageType": "Erro",
        "messageVersion": "2.2.0",
        "threeDSServerTransID": SERVER_TRANS_ID,
        "errorCode": "203",
        "errorComponent": "D",
        "errorDescription": "Format of one or more data elements is invalid",
        "errorDetail": "purchaseAmount",
        "errorMessageType": "AReq",
    }
    return _message(base, overrides)


def wrapped(message: dict[str, Any], *, padded: bool = True) -> dict[str, str]:
    """The message as some DS test tools send it: base64url JSON inside {"body": ...}."""
    body = base64.urlsafe_b64encode(json.dumps(message).encode()).decode("ascii")
    return {"body": body if padded else body.rstrip("=")}
