"""The EMV 3-D Secure protocol's vocabulary: the message types and the protocol versions the engine speaks."""

from __future__ import annotations

from enum import StrEnum


class MessageType(StrEnum):
    """messageType as it is spelled on the wire."""

    AREQ = "AReq"
    ARES = "ARes"
    CREQ = "CReq"
    CRES = "CRes"
    RREQ = "RReq"
    RRES = "RRes"
    ERRO = "Erro"


class MessageVersion(StrEnum):
    """The EMV 3DS protocol versions the engine accepts; any other messageVersion is refused, never guessed at."""

    V2_1_0 = "2.1.0"
    V2_2_0 = "2.2.0"
    V2_3_1 = "2.3.1"

    @property
    def has_decoupled_and_informational(self) -> bool:
        """2.2.0 introduced transStatus D (decoupled challenge) and I (informational only); 2.1.0 has neither."""
        return self is not MessageVersion.V2_1_0


class MessageCategory(StrEnum):
    """messageCategory. DS-specific categories (80-99, such as Mastercard's data-only 80) are refused until the
    engine knows what their ECIs mean."""

    PAYMENT = "01"
    NON_PAYMENT = "02"


class DeviceChannel(StrEnum):
    """deviceChannel of an AReq: where the cardholder is (or is not, for 3DS Requestor Initiated)."""

    APP = "01"
    BROWSER = "02"
    REQUESTOR_INITIATED = "03"
