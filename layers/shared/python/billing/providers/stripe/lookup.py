"""Finding what an execution (or a refund) made at Stripe when the answer that named it was lost.

Nothing here relies on Idempotency-Key: localstripe ignores it, and Stripe forgets a key after 24 hours, so a
resubmission days later would charge again. Our ids travel in metadata (params.py), and these lookups match them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from uuid import UUID

import stripe
from stripe.params import PaymentIntentListParams, RefundListParams

from billing.providers.stripe.params import EXECUTION_ID_KEY, REFUND_ID_KEY, TENANT_ID_KEY
from billing.providers.stripe.server_profile import StripeServerProfile
from billing.providers.stripe.statuses import PaymentIntentStatus, StripeObject, intent_status
from billing.providers.stripe.three_ds import EXPAND_LISTED_LATEST_CHARGE

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

# Stripe's largest page.
_PAGE_SIZE: Final = 100
# How far before the execution's creation its PaymentIntent may carry a `created` stamp: our clock and Stripe's
# may disagree by this much.
CREATED_MARGIN: Final = timedelta(minutes=10)
# How far back a lookup by idempotency key alone lists, when search found nothing and the execution's creation
# time is not known: twice Stripe's 24-hour idempotency window, far beyond search's propagation delay (usually
# under a minute, "more than an hour" in an outage), within which every lookup after a lost answer happens.
KEY_ONLY_LOOKBACK: Final = timedelta(hours=48)
# The search field our execution id is in.
_SEARCH_FIELD: Final = f"metadata['{EXECUTION_ID_KEY}']"

# When one execution has several intents (a server that ignored the key, a key Stripe had forgotten), the one
# that moved money wins, then the one closest to moving it.
_PRECEDENCE: Final = (
    PaymentIntentStatus.SUCCEEDED,
    PaymentIntentStatus.PROCESSING,
    PaymentIntentStatus.REQUIRES_CAPTURE,
    PaymentIntentStatus.REQUIRES_ACTION,
    PaymentIntentStatus.REQUIRES_CONFIRMATION,
    PaymentIntentStatus.REQUIRES_PAYMENT_METHOD,
    PaymentIntentStatus.CANCELED,
)


class PaymentIntentFinder:
    """Finds an execution's PaymentIntent by the execution id in its metadata, with what the server offers.

    - Search (real Stripe): `metadata['execution_id']:'<id>'`. Search is eventually consistent (an intent created
      seconds ago may not show yet), so when it finds nothing the finder also lists.
    - Listing with `created[gte]` (real Stripe): from the execution's creation minus CREATED_MARGIN (or, by key
      alone, KEY_ONLY_LOOKBACK ago), page by page with starting_after, matching metadata. Listing is strongly
      consistent.
    - A server with neither (localstripe): the whole list, page by page (it comes in insertion order), matching
      metadata.

    Raises stripe.StripeError when the server could not be asked: the caller decides what that means.
    """

    def __init__(self, profile: StripeServerProfile, *, clock: Clock | None = None) -> None:
        self._profile = profile
        self._clock = clock or (lambda: datetime.now(UTC))

    def find(
        self,
        client: stripe.StripeClient,
        *,
        execution_id: UUID,
        tenant_id: UUID | None,
        created_not_before: datetime | None,
    ) -> StripeObject | None:
        """The execution's PaymentIntent as a dict, or None if the account holds none."""
        matches: list[StripeObject] = []
        if self._profile.supports_search:
            matches = self._search(client, execution_id, tenant_id)
        if not matches:
            listed = self._listed(client, created_not_before)
            matches = [intent for intent in listed if _is_of(intent, execution_id, tenant_id)]
        if not matches:
            return None
        if len(matches) > 1:
            # More than one charge attempt for one execution: the engine reports the one that counts, support
            # refunds or cancels the others.
            log.warning(
                "several PaymentIntents for one execution",
                extra={"execution_id": str(execution_id), "payment_intents": [str(m["id"]) for m in matches]},
            )
        return min(matches, key=_rank)

    def _search(self, client: stripe.StripeClient, execution_id: UUID, tenant_id: UUID | None) -> list[StripeObject]:
        # A UUID holds no quote, so it cannot break out of the query string.
        query = f"{_SEARCH_FIELD}:'{execution_id}'"
        found = client.v1.payment_intents.search(
            params={"query": query, "limit": _PAGE_SIZE, "expand": list(EXPAND_LISTED_LATEST_CHARGE)}
        )
        return [intent for intent in (item.to_dict() for item in found.data) if _is_of(intent, execution_id, tenant_id)]

    def _listed(self, client: stripe.StripeClient, created_not_before: datetime | None) -> Iterator[StripeObject]:
        # Expanded like a retrieve, so an intent found after a lost answer reports its 3-D Secure too.
        params: PaymentIntentListParams = {"limit": _PAGE_SIZE, "expand": list(EXPAND_LISTED_LATEST_CHARGE)}
        if self._profile.supports_list_filters:
            since = (
                created_not_before - CREATED_MARGIN
                if created_not_before is not None
                else self._clock() - KEY_ONLY_LOOKBACK
            )
            params["created"] = {"gte": int(since.timestamp())}
        while True:
            page = client.v1.payment_intents.list(params=params)
            items = [item.to_dict() for item in page.data]
            yield from items
            if not page.has_more or not items:
                return
            params["starting_after"] = str(items[-1]["id"])


def find_refund(client: stripe.StripeClient, *, payment_intent: str, refund_id: UUID) -> StripeObject | None:
    """The refund our reversal row `refund_id` made on `payment_intent`, by its metadata; None if there is none.

    Lists that intent's refunds (a filter both Stripe and localstripe take). Raises stripe.StripeError when the
    server could not be asked.
    """
    params: RefundListParams = {"payment_intent": payment_intent, "limit": _PAGE_SIZE}
    while True:
        page = client.v1.refunds.list(params=params)
        items = [item.to_dict() for item in page.data]
        for refund in items:
            if _metadata(refund).get(REFUND_ID_KEY) == str(refund_id):
                return refund
        if not page.has_more or not items:
            return None
        params["starting_after"] = str(items[-1]["id"])


def _is_of(intent: StripeObject, execution_id: UUID, tenant_id: UUID | None) -> bool:
    metadata = _metadata(intent)
    if metadata.get(EXECUTION_ID_KEY) != str(execution_id):
        return False
    return tenant_id is None or metadata.get(TENANT_ID_KEY) == str(tenant_id)


def _metadata(obj: StripeObject) -> dict[str, Any]:
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _rank(intent: StripeObject) -> int:
    status = intent_status(intent)
    return _PRECEDENCE.index(status) if status is not None else len(_PRECEDENCE)
