"""Rejected bearer tokens into the trail (PCI DSS v4.0 10.2.1.4) by way of an SQS queue.

The authorizer has no database (billing.audit.log_sink says why), so it sends one small message per rejection to
the audit intake queue; the audit checkpoint function drains the queue before it sequences, records each message
as an `auth.failed` entry, one transaction per batch, and deletes a batch only after its transaction committed.

Delivery is at least once: a run that dies between the commit and the delete, or an SQS delete that fails, leaves
messages that the next run records again. The worker may not read the trail back (no SELECT on entries), so it
cannot skip one already recorded; a duplicate carries the same `request_id` in its details, which is how a reader
tells it from a second rejection. A message is never lost before it is recorded: it stays on the queue (hidden for
its visibility timeout) until a run commits it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final
from uuid import UUID

from billing.audit.events import AuditEvent, AuditEventType, AuditOutcome
from billing.audit.leaf import rfc3339_utc

# The sending side (the authorizer, which has no database) never needs the recording side's psycopg.
if TYPE_CHECKING:
    from billing.db.connection import Connection

log = logging.getLogger(__name__)

ANONYMOUS: Final = "anonymous"
# Where an entry comes from when API Gateway gave the authorizer no address (a TOKEN authorizer is given none).
AUTHORIZER_SOURCE: Final = "function:authorizer"
# SQS's largest batch for ReceiveMessage and DeleteMessageBatch.
BATCH_SIZE: Final = 10
# Per run: 50 batches fit well inside the checkpoint function's 50 s; a flood beyond it waits for the next minute.
MAX_MESSAGES_PER_RUN: Final = 500
_FIELD: Final = 200  # every string field of a message is bounded like the audit columns it lands in


@dataclass(frozen=True, slots=True)
class AuthFailure:
    """One rejected bearer token, as the authorizer states it: never the token or any secret."""

    reason: str
    request_id: str
    occurred_at: datetime
    source_ip: str | None = None
    claimed_subject: str | None = None
    claimed_tenant_id: UUID | None = None

    def to_message(self) -> str:
        return json.dumps(
            {
                "event_type": AuditEventType.AUTHENTICATION_FAILED.value,
                "reason": self.reason[:_FIELD],
                "source_ip": self.source_ip[:_FIELD] if self.source_ip else None,
                "claimed_subject": self.claimed_subject,
                "claimed_tenant_id": None if self.claimed_tenant_id is None else str(self.claimed_tenant_id),
                "request_id": self.request_id[:_FIELD],
                "occurred_at": rfc3339_utc(self.occurred_at),
            }
        )


def audit_event(body: Mapping[str, Any]) -> AuditEvent:
    """The audit entry of one intake message; ValueError (or KeyError, TypeError) if it is not one."""
    if body.get("event_type") != AuditEventType.AUTHENTICATION_FAILED.value:
        raise ValueError("not an auth.failed message")
    details = {"reason": str(body["reason"]), "request_id": str(body["request_id"])}
    details["rejected_at"] = str(body["occurred_at"])  # the authorizer's clock; occurred_at is the database's
    if body.get("claimed_tenant_id"):
        # The token's claim, unverified: a detail, never the entry's tenant_id (the tenant did not authenticate).
        details["claimed_tenant_id"] = str(UUID(str(body["claimed_tenant_id"])))
    return AuditEvent(
        AuditEventType.AUTHENTICATION_FAILED,
        AuditOutcome.DENIED,
        actor=str(body.get("claimed_subject") or ANONYMOUS),
        tenant_id=None,
        resource_type="api",
        correlation_id=details["request_id"],
        source=str(body.get("source_ip") or AUTHORIZER_SOURCE),
        details=details,
    )


@dataclass
class SqsAuthFailureSender:
    """The authorizer's side: sends each rejection, logs a failure to send and never raises."""

    queue_url: str
    client_factory: Callable[[], Any]
    _client: Any = None

    def send(self, failure: AuthFailure) -> bool:
        try:
            if self._client is None:
                self._client = self.client_factory()  # on the first rejection: most containers never need it
            self._client.send_message(QueueUrl=self.queue_url, MessageBody=failure.to_message())
        except Exception:  # any failure to send must leave the answer as it was: Deny
            log.exception("auth failure not sent to the audit intake queue", extra={"request_id": failure.request_id})
            return False
        return True


def record_audit_event(conn: Connection, event: AuditEvent) -> None:
    """billing.audit.recorder's, imported by the first recording: the sender must not load psycopg."""
    from billing.audit.recorder import record_audit_event as record

    record(conn, event)


def drain_auth_failures(conn: Connection, sqs: Any, queue_url: str, *, max_messages: int = MAX_MESSAGES_PER_RUN) -> int:
    """Receive up to `max_messages` queued rejections and record them as audit entries; how many were recorded.

    SQS calls happen outside the transaction; an SQS failure ends the drain (logged) and the rest waits for the next
    run, a database failure propagates. A message that is not an intake message is logged and left on the queue.
    """
    from billing.db.tenancy import apply_timeouts

    received = recorded = 0
    while received < max_messages:
        try:
            messages = sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=min(BATCH_SIZE, max_messages - received), WaitTimeSeconds=0
            ).get("Messages", [])
        except Exception:
            log.exception("audit intake queue not readable; the rest waits for the next run")
            return recorded
        if not messages:
            return recorded
        received += len(messages)
        events = []
        for message in messages:
            try:
                events.append((message, audit_event(json.loads(message["Body"]))))
            except (ValueError, KeyError, TypeError):
                log.error(
                    "unreadable audit intake message left on the queue", extra={"message_id": message["MessageId"]}
                )
        if not events:
            continue  # only unreadable ones, now hidden for the visibility timeout: the next receive gets others
        with conn.transaction():
            apply_timeouts(conn)
            for _, event in events:
                record_audit_event(conn, event)
        recorded += len(events)
        try:
            # Only after the commit: at least once (the module docstring).
            sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, (m, _) in enumerate(events)],
            )
        except Exception:
            log.exception("recorded audit intake messages not deleted; they will be recorded again")
            return recorded
    return recorded
