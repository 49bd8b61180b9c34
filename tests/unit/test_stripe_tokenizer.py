"""The vault's Stripe tokenization: what a Stripe-compatible server can take, and that the code never shows."""

from __future__ import annotations

import pytest

from billing.instruments.brands import CardBrand
from billing.providers.stripe.clients import StripeCredentials
from billing.providers.stripe.server_profile import LOCALSTRIPE, STRIPE
from billing.providers.stripe.tokenizer import StripeCardTokenizer
from billing.vault.provisioning import CardForProvider


@pytest.mark.parametrize(
    ("number", "code", "stripe", "localstripe"),
    [
        ("4242424242424242", "123", True, True),
        ("4242424242424242", None, True, False),  # localstripe insists on a cvc
        ("378282246310005", "1234", True, False),  # 15 digits: localstripe takes 16 only
        ("6011000990139424", None, True, False),
    ],
)
def test_which_cards_each_server_can_tokenize(number: str, code: str | None, stripe: bool, localstripe: bool) -> None:
    assert (STRIPE.can_tokenize(number, code), LOCALSTRIPE.can_tokenize(number, code)) == (stripe, localstripe)


def test_a_card_the_server_cannot_take_gets_no_token_and_no_request() -> None:
    def no_credentials(_: object) -> StripeCredentials:
        raise AssertionError("nothing may be sent for a card the server cannot take")

    tokenizer = StripeCardTokenizer(no_credentials, api_base="http://127.0.0.1:9", profile=LOCALSTRIPE)
    card = CardForProvider("378282246310005", 12, 2030, CardBrand.AMEX, security_code="1234")
    assert tokenizer.tokenize(card) is None


def test_the_card_for_a_provider_never_shows_its_number_or_code() -> None:
    card = CardForProvider("4242424242424242", 12, 2030, CardBrand.VISA, "A Holder", security_code="987")
    assert "4242424242424242" not in repr(card)
    assert "987" not in repr(card)
