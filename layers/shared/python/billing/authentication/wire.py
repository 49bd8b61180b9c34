"""EMV 3-D Secure messages as they are sent: their JSON members, with the card data kept out of every repr.

The sandbox writes these (the AReq as 3DS Server; the ARes, RReq and CRes as ACS) and the engine reads them back
through messages.parse_message exactly as it reads a real ACS's, so the sandbox cannot say what the parser would
refuse. An outgoing AReq has to carry the card number and its expiry and an ARes or RReq the cryptogram: that is the
protocol. repr() and str() therefore show those members' names only, never their values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from billing.authentication.protocol import MessageType

# acctNumber and cardExpiryDate are cardholder data (PCI DSS); authenticationValue is the issuer's proof of the
# authentication, which anyone holding it could replay into an authorisation.
SENSITIVE_MEMBERS: Final = frozenset({"acctNumber", "cardExpiryDate", "authenticationValue"})


@dataclass(frozen=True, slots=True, repr=False)
class WireMessage:
    """One EMV message's JSON members; `to_json()` is what goes on the wire."""

    members: Mapping[str, str]

    def __post_init__(self) -> None:
        # A copy behind a read-only view: the caller's dict changing later must not change a message already built.
        # str() turns the protocol's StrEnum members into the plain strings json.dumps and repr() should see.
        copied = {str(name): str(value) for name, value in self.members.items()}
        object.__setattr__(self, "members", MappingProxyType(copied))

    @property
    def message_type(self) -> MessageType:
        return MessageType(self.members["messageType"])

    def to_json(self) -> dict[str, str]:
        """The JSON object to send (a fresh dict: the message itself stays immutable)."""
        return dict(self.members)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}=<hidden>" if name in SENSITIVE_MEMBERS else f"{name}={value!r}"
            for name, value in self.members.items()
        )
        return f"WireMessage({shown})"
