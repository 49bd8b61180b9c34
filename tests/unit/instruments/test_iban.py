"""IBANs: mod 97, the country length table, bank code and last4, SEPA reach."""

from __future__ import annotations

import pytest

from billing.domain.errors import IbanCountryUnsupported, IbanInvalid
from billing.instruments.iban import IBAN_LENGTHS, SEPA_COUNTRIES, mod97, parse_iban, with_check_digits

VALID = {
    "DE89370400440532013000": ("DE", "37040044", "3000"),
    "GB82WEST12345698765432": ("GB", "WEST", "5432"),
    "FR1420041010050500013M02606": ("FR", "20041", "2606"),
    "NL91ABNA0417164300": ("NL", "ABNA", "4300"),
    "AT611904300234573201": ("AT", "19043", "3201"),
}


@pytest.mark.parametrize(("iban", "parts"), VALID.items())
def test_valid_iban_gives_country_bank_code_and_last4(iban: str, parts: tuple[str, str, str]) -> None:
    parsed = parse_iban(iban)
    assert (parsed.country, parsed.bank_code, parsed.last4) == parts


def test_printed_form_with_spaces_and_lower_case_is_normalised() -> None:
    assert parse_iban("de89 3704 0044 0532 0130 00").value == "DE89370400440532013000"


@pytest.mark.parametrize(
    ("iban", "reason"),
    [
        ("DE89370400440532013001", "checksum"),
        ("DE8937040044053201300", "length"),
        ("XX89370400440532013000", "country"),
        ("DE89-3704-0044-0532-0130-00", "format"),
        ("", "format"),
    ],
)
def test_invalid_iban_is_iban_invalid_with_the_reason(iban: str, reason: str) -> None:
    with pytest.raises(IbanInvalid) as refused:
        parse_iban(iban)
    assert [e.code for e in refused.value.errors] == [reason]


def test_valid_iban_outside_sepa_is_country_unsupported() -> None:
    brazil = with_check_digits("BR", "00360305000010009795493P1")
    assert parse_iban(brazil, sepa_only=False).country == "BR"
    with pytest.raises(IbanCountryUnsupported):
        parse_iban(brazil)


def test_every_sepa_country_has_a_length_and_check_digits_round_trip() -> None:
    assert set(IBAN_LENGTHS) >= SEPA_COUNTRIES
    for country, length in IBAN_LENGTHS.items():
        iban = with_check_digits(country, "1" * (length - 4))
        assert mod97(iban) == 1
        assert parse_iban(iban, sepa_only=False).value == iban


def test_iban_repr_never_shows_the_account() -> None:
    assert "0532013000" not in repr(parse_iban("DE89370400440532013000"))
