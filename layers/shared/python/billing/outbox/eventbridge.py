"""EventBridge adapter of the EventPublisher port: one PutEvents call per publish, answered per entry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from billing.outbox.chunking import MAX_ENTRIES_PER_CALL
from billing.outbox.events import OutboundEvent, PublishResult
from billing.outbox.ports import PublishUnavailable


class PutEventsClient(Protocol):
    """The one method of a boto3 "events" client the adapter uses (tests wrap a moto-backed client)."""

    def put_events(self, *, Entries: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]: ...  # noqa: N803


class EventBridgePublisher:
    """Publishes to one event bus; per-entry failures come back as results, a failed call as PublishUnavailable."""

    def __init__(self, client: PutEventsClient, bus_name: str) -> None:
        self._client = client
        self._bus_name = bus_name

    def publish(self, events: Sequence[OutboundEvent]) -> list[PublishResult]:
        if not events:
            return []
        if len(events) > MAX_ENTRIES_PER_CALL:
            raise ValueError(f"{len(events)} events in one call; PutEvents takes at most {MAX_ENTRIES_PER_CALL}")
        entries = [
            {
                "Source": event.source,
                "DetailType": event.detail_type,
                "Detail": event.detail,
                "Time": event.time,
                "EventBusName": self._bus_name,
            }
            for event in events
        ]
        try:
            response = self._client.put_events(Entries=entries)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise PublishUnavailable(error.get("Code", "ClientError"), error.get("Message", str(exc))) from exc
        except BotoCoreError as exc:
            raise PublishUnavailable(type(exc).__name__, str(exc)) from exc
        # Response entries are positional: the i-th answers the i-th request entry. A failed entry carries
        # ErrorCode/ErrorMessage; an accepted one carries EventId.
        answers = list(response.get("Entries", []))
        if len(answers) != len(events):
            raise PublishUnavailable("UnexpectedResponse", f"{len(answers)} answers for {len(events)} entries")
        return [
            PublishResult(accepted=False, error_code=answer["ErrorCode"], error_message=answer.get("ErrorMessage"))
            if answer.get("ErrorCode")
            else PublishResult(accepted=True)
            for answer in answers
        ]


def build_events_client() -> Any:
    """A boto3 "events" client with tight timeouts (AWS_ENDPOINT_URL points it at moto locally).

    The relay holds no transaction during a call (billing.outbox.relay), so the bound is the run's: no call starts
    within 10 s of the Lambda's timeout, and one call including its retry must fit in that. A call that times out
    costs only its own rows, which are retried after their backoff.
    """
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=1, read_timeout=3, retries={"mode": "standard", "max_attempts": 2})
    return boto3.client("events", config=config)


def build_event_publisher(bus_name: str) -> EventBridgePublisher:
    """Publisher over build_events_client()."""
    return EventBridgePublisher(build_events_client(), bus_name)
