"""Strict, typed readers for provider JSON: every shape error becomes WebhookPayloadInvalid naming the field."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from billing.domain.errors import WebhookPayloadInvalid
from billing.domain.money import MAX_AMOUNT_MINOR, Money, currency_exponent

JsonObject = Mapping[str, Any]


def load_object(provider: str, body: bytes) -> JsonObject:
    """Parse a body that must be one JSON object."""
    try:
        document = json.loads(body)
    # ValueError covers bad UTF-8 and bad JSON; RecursionError is absurdly deep nesting from a hostile sender.
    except (ValueError, RecursionError) as exc:
        raise WebhookPayloadInvalid(provider, "body is not valid JSON") from exc
    if not isinstance(document, dict):
        raise WebhookPayloadInvalid(provider, "body is not a JSON object")
    return document


def child_object(provider: str, parent: JsonObject, key: str, path: str) -> JsonObject:
    """parent[key], which must be a JSON object."""
    value = parent.get(key)
    if not isinstance(value, dict):
        raise WebhookPayloadInvalid(provider, f"{path} must be an object")
    return value


def optional_object(provider: str, parent: JsonObject, key: str, path: str) -> JsonObject | None:
    """parent[key] as a JSON object; absent and null read as None."""
    value = parent.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise WebhookPayloadInvalid(provider, f"{path} must be an object when present")
    return value


def object_list(provider: str, parent: JsonObject, key: str, path: str) -> list[JsonObject]:
    """parent[key], which must be a non-empty JSON array of objects."""
    value = parent.get(key)
    if not isinstance(value, list) or not value:
        raise WebhookPayloadInvalid(provider, f"{path} must be a non-empty array")
    if not all(isinstance(item, dict) for item in value):
        raise WebhookPayloadInvalid(provider, f"{path} must hold only objects")
    return value


def required_str(provider: str, parent: JsonObject, key: str, path: str) -> str:
    """parent[key], which must be a non-empty string."""
    value = parent.get(key)
    if not isinstance(value, str) or not value:
        raise WebhookPayloadInvalid(provider, f"{path} must be a non-empty string")
    return value


def optional_str(provider: str, parent: JsonObject, key: str, path: str) -> str | None:
    """parent[key] as a string; absent, null and "" (Adyen sends empty reasons) all read as None."""
    value = parent.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise WebhookPayloadInvalid(provider, f"{path} must be a string when present")
    return value


def optional_iso_datetime(provider: str, parent: JsonObject, key: str, path: str) -> datetime | None:
    """parent[key] as an ISO-8601 timestamp with offset (naive stamps are read as UTC)."""
    text = optional_str(provider, parent, key, path)
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise WebhookPayloadInvalid(provider, f"{path} must be an ISO-8601 timestamp") from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def optional_unix_datetime(provider: str, parent: JsonObject, key: str, path: str) -> datetime | None:
    """parent[key] as whole Unix seconds."""
    value = parent.get(key)
    if value is None:
        return None
    # bool is an int subclass in Python; `true` is not a timestamp.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise WebhookPayloadInvalid(provider, f"{path} must be Unix seconds")
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise WebhookPayloadInvalid(provider, f"{path} is out of range") from exc


def optional_money(
    provider: str,
    parent: JsonObject,
    amount_key: str,
    currency_key: str,
    path: str,
    *,
    lower_case_currency: bool = False,
) -> tuple[int, str] | None:
    """(parent[amount_key], parent[currency_key]) as integer minor units and an upper-case ISO 4217 code.

    Both absent reads as None; one without the other, a fractional, negative or absurd amount, or a currency we do
    not know is WebhookPayloadInvalid (an authentic body of the wrong shape: 400, never a 500 from the database).
    `lower_case_currency` accepts the code in lower case (Stripe's spelling) and upper-cases it.
    """
    amount, currency = parent.get(amount_key), parent.get(currency_key)
    if amount is None and currency is None:
        return None
    if amount is None or currency is None:
        raise WebhookPayloadInvalid(provider, f"{path}.{amount_key} and {path}.{currency_key} come together")
    # bool is an int subclass, and a float (1130.0) is not a count of minor units.
    if type(amount) is not int or not 0 <= amount <= MAX_AMOUNT_MINOR:
        raise WebhookPayloadInvalid(provider, f"{path}.{amount_key} must be a non-negative integer of minor units")
    code = currency.upper() if lower_case_currency and isinstance(currency, str) and currency.isascii() else currency
    if not isinstance(code, str) or not _is_currency(code):
        raise WebhookPayloadInvalid(provider, f"{path}.{currency_key} must be an ISO 4217 currency code")
    return amount, code


def required_money(
    provider: str,
    parent: JsonObject,
    amount_key: str,
    currency_key: str,
    path: str,
    *,
    lower_case_currency: bool = False,
) -> Money:
    """As optional_money, but both must be there: a reversal is only recorded with the amount it moved."""
    money = optional_money(provider, parent, amount_key, currency_key, path, lower_case_currency=lower_case_currency)
    if money is None:
        raise WebhookPayloadInvalid(provider, f"{path}.{amount_key} and {path}.{currency_key} are required")
    return Money(*money)


def _is_currency(code: str) -> bool:
    # Current and withdrawn codes: a confirmation of a payment taken in a since-withdrawn currency (BGN before the
    # euro) is still authentic, and refusing it would make the provider redeliver it forever.
    try:
        currency_exponent(code)
    except KeyError:
        return False
    return True
