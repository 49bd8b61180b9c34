"""The EventBridge adapter: positional per-entry answers, and a failed call reported as PublishUnavailable."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from billing.outbox.eventbridge import EventBridgePublisher
from billing.outbox.events import OutboundEvent, PublishResult
from billing.outbox.ports import PublishUnavailable


def event(n: int) -> OutboundEvent:
    return OutboundEvent(
        outbox_id=n,
        tenant_id=uuid4(),
        aggregate_id=uuid4(),
        event_id=uuid4(),
        source="billing.execution",
        detail_type="billing.execution.created",
        detail=f'{{"n":{n}}}',
        time=datetime(2026, 4, 1, tzinfo=UTC),
    )


class ScriptedClient:
    """Answers put_events with a fixed response (or raises), and keeps the requests."""

    def __init__(self, response: Mapping[str, Any] | Exception) -> None:
        self.response = response
        self.requests: list[list[Mapping[str, Any]]] = []

    def put_events(self, *, Entries: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:  # noqa: N803 (boto3 name)
        self.requests.append(list(Entries))
        if isinstance(self.response, Exception):
            raise self.response
        return self.response


def test_publish_sends_one_entry_per_event_on_the_configured_bus() -> None:
    client = ScriptedClient({"FailedEntryCount": 0, "Entries": [{"EventId": "a"}, {"EventId": "b"}]})
    events = [event(1), event(2)]

    results = EventBridgePublisher(client, "billing-events").publish(events)

    assert results == [PublishResult(accepted=True), PublishResult(accepted=True)]
    [request] = client.requests
    assert [entry["Detail"] for entry in request] == ['{"n":1}', '{"n":2}']
    assert {entry["EventBusName"] for entry in request} == {"billing-events"}
    assert {entry["Source"] for entry in request} == {"billing.execution"}
    assert request[0]["Time"] == events[0].time


def test_publish_with_partial_failure_maps_answers_by_position() -> None:
    client = ScriptedClient(
        {
            "FailedEntryCount": 1,
            "Entries": [
                {"EventId": "a"},
                {"ErrorCode": "ThrottlingException", "ErrorMessage": "Rate exceeded"},
                {"EventId": "c"},
            ],
        }
    )

    results = EventBridgePublisher(client, "bus").publish([event(1), event(2), event(3)])

    assert [r.accepted for r in results] == [True, False, True]
    assert results[1].error == "ThrottlingException: Rate exceeded"


def test_publish_when_the_call_fails_raises_unavailable_with_the_aws_code() -> None:
    error = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "PutEvents")

    with pytest.raises(PublishUnavailable) as caught:
        EventBridgePublisher(ScriptedClient(error), "bus").publish([event(1)])

    assert caught.value.error_code == "AccessDeniedException"


def test_publish_when_the_endpoint_is_unreachable_raises_unavailable() -> None:
    client = ScriptedClient(EndpointConnectionError(endpoint_url="https://events.example"))

    with pytest.raises(PublishUnavailable, match="EndpointConnectionError"):
        EventBridgePublisher(client, "bus").publish([event(1)])


def test_publish_with_fewer_answers_than_entries_raises_unavailable() -> None:
    client = ScriptedClient({"FailedEntryCount": 0, "Entries": [{"EventId": "a"}]})

    with pytest.raises(PublishUnavailable, match="UnexpectedResponse"):
        EventBridgePublisher(client, "bus").publish([event(1), event(2)])


def test_publish_more_than_ten_events_raises_without_calling() -> None:
    client = ScriptedClient({"Entries": []})

    with pytest.raises(ValueError, match="at most 10"):
        EventBridgePublisher(client, "bus").publish([event(n) for n in range(11)])

    assert client.requests == []
