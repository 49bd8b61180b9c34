"""What a Stripe-compatible server supports: real Stripe, or localstripe (the emulator the tests and the local stack
run against). The one place where the emulator's gaps are written down; the provider asks a profile, never the
server's name.

The engine's guarantees never rest on a flag being true: a server that ignores Idempotency-Key (localstripe) still
gets one PaymentIntent per execution, because a resubmission looks for the existing one first (see lookup.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class StripeServerProfile:
    """The capabilities of one Stripe-compatible server. Flags say what the server does, as found by trying it."""

    name: str
    # Replays the first answer for a repeated Idempotency-Key. Recorded, never relied upon: lookups cover a server
    # that ignores it, and Stripe itself forgets keys after 24 hours.
    honours_idempotency_key: bool
    # GET /v1/payment_intents/search (Stripe's search query language) exists.
    supports_search: bool
    # GET /v1/payment_intents takes created[gte] and friends; without them a lookup pages through the whole list.
    supports_list_filters: bool
    # PaymentIntent create takes `description` (shown in Stripe's dashboard).
    accepts_description: bool
    # PaymentIntent create takes `return_url` (where a 3-D Secure redirect sends the customer back).
    accepts_return_url: bool
    # PaymentIntent create takes `allowed_payment_method_types` (the SDK's API version's name for the list of
    # payment method types a payment may use).
    accepts_allowed_payment_method_types: bool
    # Refund create takes `reason`.
    accepts_refund_reason: bool
    # off_session is refused unless confirm=true is sent with it. The provider always confirms at creation, so this
    # holds for both servers; recorded so a future "create now, confirm later" flow knows.
    off_session_requires_confirm: bool
    # Acts on payment_method_options.card: request_three_d_secure (3-D Secure the engine asks for) and three_d_secure
    # (an authentication the engine ran, imported). Recorded, never relied upon: both are sent to either server, and
    # what the charge then reports (reports_three_d_secure) is what the engine believes.
    honours_three_d_secure_options: bool
    # PaymentIntent create takes error_on_requires_action, sent with imported 3-D Secure results so that a soft
    # decline fails the attempt instead of Stripe starting an authentication of its own.
    accepts_error_on_requires_action: bool
    # A charge reports the 3-D Secure that ran as payment_method_details.card.three_d_secure.
    reports_three_d_secure: bool
    # Card PaymentMethods it can create from a number: the number lengths it takes (None: any valid card number) and
    # whether it insists on a security code. Where it cannot, the vault keeps no token at this server for the card,
    # and routing charges the card elsewhere (the sandbox locally).
    card_number_lengths: frozenset[int] | None = None
    card_requires_security_code: bool = False

    def can_tokenize(self, number: str, security_code: str | None) -> bool:
        """True if this server can make a card PaymentMethod from this number (and code)."""
        if self.card_number_lengths is not None and len(number) not in self.card_number_lengths:
            return False
        return security_code is not None or not self.card_requires_security_code


STRIPE: Final = StripeServerProfile(
    name="stripe",
    honours_idempotency_key=True,
    supports_search=True,
    supports_list_filters=True,
    accepts_description=True,
    accepts_return_url=True,
    accepts_allowed_payment_method_types=True,
    accepts_refund_reason=True,
    off_session_requires_confirm=True,
    honours_three_d_secure_options=True,
    accepts_error_on_requires_action=True,
    reports_three_d_secure=True,
)

# localstripe 1.15.10: ignores Idempotency-Key; no PaymentIntent search (404) and no list filters ("Unexpected
# created", 400; lists come in insertion order); refuses description, return_url, automatic_payment_methods,
# allowed_payment_method_types (it knows only the older payment_method_types, and ignores it) and a refund's reason
# with "Unexpected ..." (400); takes off_session only together with confirm=true; makes card PaymentMethods from
# 16-digit numbers only, and only with a 3-digit cvc ("Bad request" otherwise). 3-D Secure: it takes
# payment_method_options (request_three_d_secure, an imported three_d_secure) and ignores all of it: whether a card
# authenticates depends on its number alone (4000002760003184 and five others always require action, any other never
# does); it refuses error_on_requires_action ("Unexpected ..."); its charges have no payment_method_details, so it
# reports no 3-D Secure result (only requires_action, and a failed authentication as last_payment_error).
LOCALSTRIPE: Final = StripeServerProfile(
    name="localstripe",
    honours_idempotency_key=False,
    supports_search=False,
    supports_list_filters=False,
    accepts_description=False,
    accepts_return_url=False,
    accepts_allowed_payment_method_types=False,
    accepts_refund_reason=False,
    off_session_requires_confirm=True,
    honours_three_d_secure_options=False,
    accepts_error_on_requires_action=False,
    reports_three_d_secure=False,
    card_number_lengths=frozenset({16}),
    card_requires_security_code=True,
)

PROFILES: Final = {profile.name: profile for profile in (STRIPE, LOCALSTRIPE)}


def profile_named(name: str) -> StripeServerProfile:
    """The profile configured by name ("stripe" | "localstripe"); any other name is a configuration error."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown Stripe server profile {name!r}; expected one of {sorted(PROFILES)}") from None
