"""Hostile input refused before routing: unstorable characters, absurd nesting and numbers no client can hold.

Every string the API receives (headers, query and path parameters, JSON keys and values) may end up in a log
line, a query parameter or a text column. PostgreSQL text cannot hold NUL and UTF-8 cannot encode a lone
surrogate, so either would surface as a 500 from the database; nesting thousands of levels deep exhausts a
recursive parser or validator; integers beyond 2**53-1 silently lose precision in every JavaScript client, and
NaN/Infinity are not JSON at all. All of these are refused as 422 validation_failed before any query runs (a body
that is not UTF-8 text at all as 400 malformed_request, one declared as anything but JSON as 415).

The checks are iterative and linear in the input (bounded by MAX_REQUEST_BODY_BYTES), so refusing costs less than
the request would have.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

from billing.domain.errors import BillingError, FieldError, MalformedRequest, UnsupportedMediaType, ValidationFailed
from billing.domain.execution import UNSTORABLE_CHARACTER, mask_card_numbers
from billing.webhooks.events import WebhookEvent

# Deeper than any document this API takes (an execution request nests two levels) and far below where a
# recursive parser or validator could run out of stack.
MAX_JSON_DEPTH: Final = 32
# The largest integer an IEEE double (a JavaScript number) holds exactly.
MAX_SAFE_INTEGER: Final = 2**53 - 1
# What Powertools reads a body as JSON for (a prefix match: parameters such as charset may follow).
JSON_MEDIA_TYPE: Final = "application/json"
# A problem lists this many offending fields at most: enough to fix a request, bounded for a hostile one.
MAX_REPORTED_ERRORS: Final = 20

UNSTORABLE: Final = "unstorable_character"
TOO_DEEP: Final = "too_deep"
NUMBER_OUT_OF_RANGE: Final = "number_out_of_range"
_UNSTORABLE_MESSAGE: Final = "holds a NUL character or a lone surrogate"

# A JSON string (escapes included) or a bracket. Strings are matched whole so brackets inside them are not counted;
# the alternatives are disjoint single characters, so matching is linear even on an unterminated string.
_JSON_STRING_OR_BRACKET: Final = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
# (event key, location in a field path) of what API Gateway hands a function besides the body.
_PARAMETER_SOURCES: Final = (
    ("headers", "header"),
    ("multiValueHeaders", "header"),
    ("queryStringParameters", "query"),
    ("multiValueQueryStringParameters", "query"),
    ("pathParameters", "path"),
)


class _NumberOutOfRange(ValueError):
    """Raised from inside json.loads by the number hooks, to stop parsing at the first unsafe number."""


def refusal_of(event: Mapping[str, Any], *, body: bool = True) -> BillingError | None:
    """Why an API Gateway proxy event must be refused before routing (ValidationFailed, MalformedRequest), or None.

    `body=False` leaves the body alone: a webhook's body must reach signature verification exactly as received.
    """
    errors = _unique(parameter_errors(event))
    if body:
        if not errors and (unsupported := media_type_refusal(event)) is not None:
            return unsupported
        try:
            errors += body_errors(event)
        except MalformedRequest as unreadable:
            return unreadable
    return ValidationFailed(errors[:MAX_REPORTED_ERRORS]) if errors else None


def media_type_refusal(event: Mapping[str, Any]) -> UnsupportedMediaType | None:
    """UnsupportedMediaType for a body declared as anything but JSON; None without a body or a Content-Type.

    Powertools would parse form data into the request model, and answer other types with an exception of its own;
    this API reads JSON only, as Powertools does when no Content-Type is given.
    """
    if not event.get("body"):
        return None
    headers = event.get("headers")
    declared = (
        next((v for k, v in headers.items() if str(k).lower() == "content-type"), None)
        if isinstance(headers, Mapping)
        else None
    )
    if not isinstance(declared, str) or not declared.strip() or declared.strip().startswith(JSON_MEDIA_TYPE):
        return None
    shown = UNSTORABLE_CHARACTER.sub("?", declared.strip()[:64])
    return UnsupportedMediaType(f"request bodies must be {JSON_MEDIA_TYPE}, not {shown!r}")


def parameter_errors(event: Mapping[str, Any]) -> list[FieldError]:
    """Unstorable characters in the names or values of headers, query parameters and path parameters."""
    errors: list[FieldError] = []
    for source, location in _PARAMETER_SOURCES:
        parameters = event.get(source)
        if not isinstance(parameters, Mapping):
            continue
        for name, value in parameters.items():
            values = value if isinstance(value, list) else [value]
            if _unstorable(name) or any(_unstorable(item) for item in values):
                # Header names are case-insensitive (named in lower case, as validation errors do); others are not.
                shown = _shown(str(name)).lower() if location == "header" else _shown(str(name))
                errors.append(FieldError(f"{location}.{shown}", UNSTORABLE, _UNSTORABLE_MESSAGE))
    return errors


def body_errors(event: Mapping[str, Any]) -> list[FieldError]:
    """What makes the body unsafe to parse or store; MalformedRequest when it is not UTF-8 text at all.

    A body that is not JSON is left to the route, which refuses it (400) where it reads one.
    """
    text = _body_text(event)
    if not text:
        return []
    if UNSTORABLE_CHARACTER.search(text):
        return [FieldError("body", UNSTORABLE, _UNSTORABLE_MESSAGE)]
    if json_depth(text) > MAX_JSON_DEPTH:
        return [FieldError("body", TOO_DEEP, f"JSON nests deeper than {MAX_JSON_DEPTH} levels")]
    try:
        document = json.loads(text, parse_int=_safe_int, parse_float=_finite_float, parse_constant=_no_constant)
    except _NumberOutOfRange as unsafe:
        return [FieldError("body", NUMBER_OUT_OF_RANGE, str(unsafe))]
    except ValueError:
        return []
    return [FieldError(path, UNSTORABLE, _UNSTORABLE_MESSAGE) for path in unstorable_paths(document)]


def json_depth(text: str) -> int:
    """The deepest bracket nesting in JSON text, brackets inside strings not counted; no recursion."""
    depth = deepest = 0
    for token in _JSON_STRING_OR_BRACKET.finditer(text):
        bracket = token.group()
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif bracket in "]}":
            depth = max(depth - 1, 0)
    return deepest


def unstorable_paths(document: Any) -> Iterator[str]:
    """Dotted paths (as validation errors name fields) of every key or string in a parsed document that holds an
    unstorable character; iterative, so depth costs no stack."""
    pending: list[tuple[str, Any]] = [("", document)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, str):
            if _unstorable(value):
                yield path or "body"
        elif isinstance(value, dict):
            for key, item in reversed(value.items()):
                child = f"{path}.{_shown(key)}" if path else _shown(key)
                if _unstorable(key):
                    yield child
                pending.append((child, item))
        elif isinstance(value, list):
            for index in reversed(range(len(value))):
                pending.append((f"{path}.{index}" if path else str(index), value[index]))


def require_storable_events(events: Sequence[WebhookEvent]) -> None:
    """Raise ValidationFailed if an authentic webhook event carries text its inbox row or execution cannot hold."""
    errors = [
        FieldError(f"events.{index}.{field}", UNSTORABLE, _UNSTORABLE_MESSAGE)
        for index, event in enumerate(events)
        for field, value in (
            ("event_id", event.event_id),
            ("event_type", event.event_type),
            ("provider_reference", event.provider_reference),
            ("failure_code", event.failure_code),
        )
        if value is not None and _unstorable(value)
    ]
    if errors:
        raise ValidationFailed(errors[:MAX_REPORTED_ERRORS])


def _body_text(event: Mapping[str, Any]) -> str:
    body = event.get("body")
    if not isinstance(body, str) or not body:
        return ""
    if not event.get("isBase64Encoded"):
        return body
    try:
        return base64.b64decode(body, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        raise MalformedRequest("request body is not UTF-8 text") from None


def _safe_int(literal: str) -> int:
    # Compare digit counts before converting: int() of a many-thousand-digit literal is slow, and past
    # sys.get_int_max_str_digits() a ValueError the JSON parser would not report as such.
    value = int(literal) if len(literal.lstrip("-")) <= len(str(MAX_SAFE_INTEGER)) else None
    if value is None or abs(value) > MAX_SAFE_INTEGER:
        raise _NumberOutOfRange(f"integers must lie within ±{MAX_SAFE_INTEGER} (2**53-1)")
    return value


def _finite_float(literal: str) -> float:
    value = float(literal)
    if value in (float("inf"), float("-inf")):
        raise _NumberOutOfRange("numbers must be finite")
    return value


def _no_constant(literal: str) -> Any:
    raise _NumberOutOfRange(f"{literal} is not a JSON number")


def _unstorable(value: object) -> bool:
    return isinstance(value, str) and UNSTORABLE_CHARACTER.search(value) is not None


def _shown(name: str) -> str:
    """A caller-supplied name as it may appear in a field path: bounded, printable, never a card number."""
    return mask_card_numbers(UNSTORABLE_CHARACTER.sub("?", name[:64]), "***")


def _unique(errors: Iterable[FieldError]) -> list[FieldError]:
    # headers and multiValueHeaders (and the two query maps) repeat each other.
    return list(dict.fromkeys(errors))
