"""Query parameter types read exactly as the OpenAPI document describes them, never coerced from look-alikes."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, Final

from pydantic import BeforeValidator

# RFC 3339 date-time, what OpenAPI's `format: date-time` means: the offset is required, so "2026-04-10T12:00:00"
# is not silently read in the server's time zone.
_RFC3339_DATE_TIME: Final = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:[Zz]|[+-]\d{2}:\d{2})$"
)


def _rfc3339_text(value: Any) -> Any:
    # Without this, pydantic reads "0.5" or "1712750400" as seconds since the epoch.
    if isinstance(value, str) and not _RFC3339_DATE_TIME.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2026-04-10T12:00:00Z")
    return value


Rfc3339DateTime = Annotated[datetime, BeforeValidator(_rfc3339_text)]

# OpenAPI's `format: date`: exactly YYYY-MM-DD.
_CALENDAR_DAY: Final = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _calendar_day_text(value: Any) -> Any:
    # Without this, pydantic reads "1712750400" as seconds since the epoch and a date-time as its day.
    if isinstance(value, str) and not _CALENDAR_DAY.fullmatch(value):
        raise ValueError("must be a calendar day, YYYY-MM-DD")
    return value


CalendarDay = Annotated[date, BeforeValidator(_calendar_day_text)]
