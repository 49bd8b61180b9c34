"""Card numbers are found however a person types them, by the one detector that input refusal and log masking share."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from billing.domain.execution import (
    CARD_NUMBER_SEPARATORS,
    PAN_MAX_DIGITS,
    PAN_MIN_DIGITS,
    card_number_spans,
    looks_like_card_number,
    mask_card_numbers,
    validate_idempotency_key,
)
from billing.observability import redact


def luhn_check_digit(payload: str) -> str:
    """The digit that makes payload + digit Luhn-valid."""
    total = 0
    for index, char in enumerate(reversed(payload)):
        digit = int(char)
        if index % 2 == 0:  # these are doubled once the check digit is appended on the right
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return str(-total % 10)


def is_luhn_valid(digits: str) -> bool:
    return luhn_check_digit(digits[:-1]) == digits[-1]


digit_strings = st.integers(PAN_MIN_DIGITS, PAN_MAX_DIGITS).flatmap(
    lambda n: st.text("0123456789", min_size=n - 1, max_size=n - 1)
)
luhn_valid_pans = digit_strings.map(lambda payload: payload + luhn_check_digit(payload))
non_luhn_numbers = (
    st.integers(PAN_MIN_DIGITS, PAN_MAX_DIGITS)
    .flatmap(lambda n: st.text("0123456789", min_size=n, max_size=n))
    .filter(lambda digits: not is_luhn_valid(digits))
)
separator_runs = st.text(CARD_NUMBER_SEPARATORS, min_size=0, max_size=4)
# Text around a number that cannot join it: letters, punctuation a person writes around a number, line breaks.
surroundings = st.text("abcXYZ:;,!?()\n", max_size=8)


@st.composite
def typed(draw: st.DrawFn, digits: st.SearchStrategy[str]) -> tuple[str, str]:
    """(digits, the digits as typed): a run of separators between any two of them."""
    number = draw(digits)
    gaps = draw(st.lists(separator_runs, min_size=len(number) - 1, max_size=len(number) - 1))
    return number, number[0] + "".join(gap + digit for gap, digit in zip(gaps, number[1:], strict=True))


@given(typed(luhn_valid_pans), surroundings, surroundings)
@example(("4111111111111111", "4111 1111 1111 1111"), "paid with ", " ok")
@example(("4111111111111111", "4111\t1111\t1111\t1111"), "", "")
@example(("4111111111111111", "4111-1111.1111/1111"), "", "")
@example(("4111111111111111", "4111__1111  -  1111..1111"), "x", "y")
def test_luhn_valid_pan_typed_with_any_separators_is_detected_and_masked(
    pan: tuple[str, str], before: str, after: str
) -> None:
    _, typed_pan = pan
    text = before + typed_pan + after
    assert looks_like_card_number(text)
    assert mask_card_numbers(text, "***") == before + "***" + after
    assert redact({"note": text}) == {"note": before + "***" + after}


@st.composite
def typed_without_standalone_part(draw: st.DrawFn) -> str:
    """A non-Luhn 13-19 digit number typed with separator runs, none of which leaves 13 or more digits on one side.

    A separator with 13+ digits on a side makes that side a number of its own, which is rightly flagged when it is
    Luhn-valid ("4111 1111 1111 1111 7" holds a card number), so those placements are not part of this property.
    """
    number = draw(non_luhn_numbers)
    # A separator before digit k leaves k digits before it and len - k after it.
    positions = range(len(number) - PAN_MIN_DIGITS + 1, PAN_MIN_DIGITS)
    gaps = {k: draw(separator_runs) for k in positions}
    return "".join(gaps.get(k, "") + digit for k, digit in enumerate(number))


@given(typed_without_standalone_part(), surroundings, surroundings)
@example("4111 1111 1111 1112", "", "")
@example("4111111111111112", "order ", "")
def test_non_luhn_number_typed_with_separators_is_not_flagged(typed_number: str, before: str, after: str) -> None:
    text = before + typed_number + after
    assert not looks_like_card_number(text)
    assert mask_card_numbers(text, "***") == text


def flagged_by_brute_force(text: str) -> bool:
    """The detector's rule, spelt out slowly: some run of whole digit chunks of a group is a Luhn-valid PAN."""
    separators = re.escape(CARD_NUMBER_SEPARATORS)
    for group in re.findall(rf"[0-9]+(?:[{separators}]+[0-9]+)*", text):
        chunks = re.findall(r"[0-9]+", group)
        for first in range(len(chunks)):
            for last in range(first + 1, len(chunks) + 1):
                digits = "".join(chunks[first:last])
                if PAN_MIN_DIGITS <= len(digits) <= PAN_MAX_DIGITS and is_luhn_valid(digits):
                    return True
    return False


@given(st.text("0123456789" + CARD_NUMBER_SEPARATORS + "ab", max_size=60))
@example("4111111111111111")
def test_detector_agrees_with_the_brute_force_rule(text: str) -> None:
    assert looks_like_card_number(text) is flagged_by_brute_force(text)
    masked = mask_card_numbers(text, "#")
    assert not flagged_by_brute_force(masked.replace("#", "x"))


@given(luhn_valid_pans, st.text("0123456789", min_size=1, max_size=3))
def test_pan_followed_by_expiry_and_code_is_still_found(pan: str, code: str) -> None:
    # "4111 1111 1111 1111 12/27 123": the number and what follows it form one longer digit group.
    text = f"card {pan} 12/27 {code}"
    assert looks_like_card_number(text)
    assert pan not in mask_card_numbers(text, "***")


@given(st.text("0123456789", min_size=PAN_MAX_DIGITS + 1, max_size=40))
def test_one_unbroken_run_longer_than_a_pan_is_not_cut_into_one(digits: str) -> None:
    # Order numbers and microsecond timestamps are long digit runs; reading windows out of them would flag ~10%.
    assert card_number_spans(digits) == []


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("4242424242424242", "***"),
        ("cards 4242424242424242 and 5555-5555-5555-4444.", "cards *** and ***."),
        ("INV-2026-000123", "INV-2026-000123"),
        ("2026-04-10 12:00:00.123456", "2026-04-10 12:00:00.123456"),
        ("e2e00000-0000-4000-8000-000000000001", "e2e00000-0000-4000-8000-000000000001"),
    ],
)
def test_masking_replaces_only_the_card_numbers(text: str, masked: str) -> None:
    assert mask_card_numbers(text, "***") == masked


def test_card_number_given_as_a_json_number_is_masked_in_logs() -> None:
    assert redact({"value": 4242424242424242, "count": 3, "flag": True}) == {"value": "***", "count": 3, "flag": True}


def test_log_key_that_is_a_card_number_is_masked() -> None:
    assert redact({"4242 4242 4242 4242": "x"}) == {"***": "x"}


def test_hostile_run_of_single_digits_is_scanned_whole_and_only_the_card_is_found() -> None:
    # 16 KiB of "1 1 1 ...": every run of 13-19 chunks is a candidate (no all-ones run passes Luhn); prefix sums
    # keep each check constant-time, so the card number after them is still reached and found.
    ones = " ".join("1" * 8192)
    text = f"{ones} x 4111111111111111"
    assert card_number_spans(text) == [(len(ones) + 3, len(text))]


def test_canonical_uuids_are_never_card_numbers_but_a_card_beside_one_is() -> None:
    # One random UUID in about 400 has digit-only groups forming a Luhn-valid 13-19 digit window across its hyphens;
    # a client's UUID idempotency key must not be refused for that.
    import uuid

    uuids = [str(uuid.UUID(int=n * 0x9E3779B97F4A7C15_F39CC0605CEDC834 % (1 << 128))) for n in range(20_000)]
    assert not [u for u in uuids if looks_like_card_number(u) or looks_like_card_number(f"key-{u}")]
    assert looks_like_card_number(f"4111 1111 1111 1111 {uuids[0]}")
    assert validate_idempotency_key("12345678-1234-1234-1234-123456789012") == "12345678-1234-1234-1234-123456789012"
