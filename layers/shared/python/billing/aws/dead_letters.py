"""The retry dead-letter queue: parking exhausted retries, and operator tooling to list, show, redrive and purge.

    python -m billing.aws.dead_letters list [--limit N]
    python -m billing.aws.dead_letters show MESSAGE_ID
    python -m billing.aws.dead_letters redrive --all | --id MESSAGE_ID [--id ...]
    python -m billing.aws.dead_letters purge --yes

Queue URLs come from DLQ_URL and RETRY_QUEUE_URL (or --dlq-url / --queue-url); redrive and show also need the
database (DATABASE_URL, or the RDS Proxy settings a function has).

Only the SQS calls every SQS implementation has are used (receive, send, delete, change visibility):
StartMessageMoveTask cannot pick messages, records nothing per message, and moto does not implement it. Reading
the DLQ hides what was read for a short scan visibility, then makes every message not moved visible again, so
list and show leave the queue as they found it (apart from the receive count, which nothing reads on a DLQ).

Every redrive is recorded twice: a log line per message and, when the message names an execution, a
`billing.execution.redriven` event on it (db.attempts). A redriven message is handled like any retry: if the
execution is still waiting for that attempt it runs; if it moved on (an exhausted retry is already failed), the
worker drops it as stale. Purge deletes by receive-and-delete, logging each message, so it needs no PurgeQueue
right and leaves a trace of what was thrown away. Given an audit recorder (the command line always gives one), each
redriven and each purged message is also an operator action in the audit trail (PCI DSS 10.2.1.2), recorded before
the message leaves the DLQ.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

from billing import resource_names as names
from billing.audit.events import AuditEvent
from billing.audit.hooks import operator_action
from billing.aws.retry_queue import decode_retry
from billing.domain.execution import Execution
from billing.domain.workflow import WorkflowWriteContext
from billing.observability import logger
from billing.services.ports import RetryRequest
from billing.services.retry_worker import QueueMessage

# SQS returns at most 10 messages per receive.
_MAX_PER_RECEIVE = 10
# How long a scan hides what it read: long enough to read the whole queue once without seeing a message twice.
DEFAULT_SCAN_VISIBILITY_SECONDS = 60
# Long polling asks every SQS server, so an empty answer means an empty queue (short polling samples a subset).
DEFAULT_WAIT_SECONDS = 1
# Consecutive empty receives that end a scan.
DEFAULT_EMPTY_RECEIVES = 2


class RedriveRecorder(Protocol):
    """Where redrives are recorded durably (billing.db.attempts.AttemptLedger)."""

    def record_redriven(
        self,
        tenant_id: UUID,
        execution_id: UUID,
        context: WorkflowWriteContext,
        *,
        attempt: int,
        message_id: str,
        new_message_id: str,
        correlation_id: str | None = None,
    ) -> Execution | None: ...


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message parked in the DLQ."""

    message_id: str
    body: str
    receipt_handle: str
    sent_at: datetime | None
    receive_count: int
    attributes: Mapping[str, str] = field(default_factory=dict)

    @property
    def request(self) -> RetryRequest | None:
        """The retry the message asks for; None if the body is not a retry message (a poison message)."""
        try:
            return decode_retry(self.body)
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> dict[str, Any]:
        """A JSON-ready view for operators and log lines."""
        request = self.request
        return {
            "message_id": self.message_id,
            "sent_at": self.sent_at.isoformat() if self.sent_at else None,
            "receive_count": self.receive_count,
            "attributes": dict(self.attributes),
            "tenant_id": str(request.tenant_id) if request else None,
            "execution_id": str(request.execution_id) if request else None,
            "attempt": request.attempt if request else None,
            "not_before": request.not_before.isoformat() if request else None,
            "correlation_id": request.correlation_id if request else None,
            "body": None if request else self.body[:1000],
        }


@dataclass(frozen=True, slots=True)
class RedrivenMessage:
    message_id: str
    new_message_id: str
    execution_id: UUID | None
    # False when the message names no execution that exists: the log line is then the only record.
    recorded: bool


@dataclass(frozen=True, slots=True)
class RedriveReport:
    redriven: tuple[RedrivenMessage, ...]
    # Selected ids that were not found in the DLQ.
    missing: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "redriven": [
                {
                    "message_id": m.message_id,
                    "new_message_id": m.new_message_id,
                    "execution_id": str(m.execution_id) if m.execution_id else None,
                    "recorded": m.recorded,
                }
                for m in self.redriven
            ],
            "missing": list(self.missing),
        }


class SqsQueue:
    """Receive and delete on one queue: the MessageQueue a local retry poller reads."""

    def __init__(
        self, client: Any, queue_url: str, *, wait_seconds: int = 0, visibility_timeout: int | None = None
    ) -> None:
        self._client = client
        self._queue_url = queue_url
        self._wait_seconds = wait_seconds
        self._visibility_timeout = visibility_timeout

    def receive(self, max_messages: int) -> Sequence[QueueMessage]:
        kwargs: dict[str, Any] = {
            "QueueUrl": self._queue_url,
            "MaxNumberOfMessages": max(1, min(max_messages, _MAX_PER_RECEIVE)),
            "WaitTimeSeconds": self._wait_seconds,
        }
        if self._visibility_timeout is not None:
            kwargs["VisibilityTimeout"] = self._visibility_timeout
        messages = self._client.receive_message(**kwargs).get("Messages", [])
        return [QueueMessage(m["MessageId"], m["Body"], m["ReceiptHandle"]) for m in messages]

    def delete(self, receipt_handle: str) -> None:
        self._client.delete_message(QueueUrl=self._queue_url, ReceiptHandle=receipt_handle)


class SqsDeadLetterSink:
    """Parks a retry message in the DLQ, tagged with why (the retry worker's DeadLetterSink)."""

    def __init__(self, client: Any, dlq_url: str) -> None:
        self._client = client
        self._dlq_url = dlq_url

    def park(self, body: str, *, request: RetryRequest, reason: str, error_code: str | None) -> str:
        attributes = {
            "reason": reason,
            "tenant_id": str(request.tenant_id),
            "execution_id": str(request.execution_id),
            "attempt": str(request.attempt),
        }
        if error_code:
            attributes["error_code"] = error_code
        response = self._client.send_message(
            QueueUrl=self._dlq_url,
            MessageBody=body,
            MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
        )
        message_id: str = response["MessageId"]
        logger.warning(
            "billing.retry.dead_lettered",
            extra={"event": "billing.retry.dead_lettered", "dead_letter_message_id": message_id, **attributes},
        )
        return message_id


AuditSink = Callable[[AuditEvent], None]


class DeadLetterTool:
    """Operator actions on the DLQ of the retry queue."""

    def __init__(
        self,
        client: Any,
        dlq_url: str,
        source_queue_url: str,
        recorder: RedriveRecorder,
        *,
        context: WorkflowWriteContext | None = None,
        audit: AuditSink | None = None,
        wait_seconds: int = DEFAULT_WAIT_SECONDS,
        scan_visibility_seconds: int = DEFAULT_SCAN_VISIBILITY_SECONDS,
        empty_receives: int = DEFAULT_EMPTY_RECEIVES,
    ) -> None:
        if empty_receives < 1 or scan_visibility_seconds < 1:
            raise ValueError("empty_receives and scan_visibility_seconds must be positive")
        self._client = client
        self._dlq_url = dlq_url
        self._source_url = source_queue_url
        self._recorder = recorder
        self._context = context or WorkflowWriteContext.system()
        self._audit = audit
        self._wait_seconds = wait_seconds
        self._scan_visibility = scan_visibility_seconds
        self._empty_receives = empty_receives

    def list_parked(self, limit: int | None = None) -> list[DeadLetter]:
        """The parked messages (up to `limit`), oldest first; the queue is left as it was."""
        letters: list[DeadLetter] = []
        with self._scan() as scan:
            for letter in scan:
                letters.append(letter)
                if limit is not None and len(letters) >= limit:
                    break
        return sorted(letters, key=lambda letter: letter.sent_at or datetime.max.replace(tzinfo=UTC))

    def show(self, message_id: str) -> DeadLetter | None:
        """One parked message by id, or None; the queue is left as it was."""
        with self._scan() as scan:
            for letter in scan:
                if letter.message_id == message_id:
                    return letter
        return None

    def redrive(self, message_ids: Collection[str] | None = None) -> RedriveReport:
        """Move the selected parked messages (all when None) back to the retry queue, recording each move."""
        wanted = None if message_ids is None else set(message_ids)
        redriven: list[RedrivenMessage] = []
        with self._scan() as scan:
            for letter in scan:
                if wanted is not None and letter.message_id not in wanted:
                    continue
                redriven.append(self._redrive_one(letter, scan))
                if wanted is not None and len(redriven) == len(wanted):
                    break
        moved = {m.message_id for m in redriven}
        missing = tuple(sorted(wanted - moved)) if wanted is not None else ()
        return RedriveReport(tuple(redriven), missing)

    def purge(self, *, confirm: bool) -> int:
        """Delete every parked message, logging each; refuses unless confirm is True. The number deleted."""
        if not confirm:
            raise PermissionError("purging the dead-letter queue deletes messages for good: confirm it explicitly")
        purged = 0
        with self._scan() as scan:
            for letter in scan:
                logger.warning(
                    "billing.retry.dead_letter_purged",
                    extra={"event": "billing.retry.dead_letter_purged", **letter.describe()},
                )
                self._audited("dlq_purge", letter, {})
                scan.delete(letter)
                purged += 1
        return purged

    def _redrive_one(self, letter: DeadLetter, scan: _Scan) -> RedrivenMessage:
        response = self._client.send_message(
            QueueUrl=self._source_url,
            MessageBody=letter.body,
            MessageAttributes={"redriven_from": {"DataType": "String", "StringValue": letter.message_id}},
        )
        new_message_id: str = response["MessageId"]
        request = letter.request
        recorded = False
        if request is not None:
            # Recorded before the DLQ copy is deleted: if recording fails, the message stays parked and the
            # retry-queue copy is at worst a duplicate, which the worker's attempt guard drops.
            recorded = (
                self._recorder.record_redriven(
                    request.tenant_id,
                    request.execution_id,
                    self._context,
                    attempt=request.attempt,
                    message_id=letter.message_id,
                    new_message_id=new_message_id,
                    correlation_id=request.correlation_id,
                )
                is not None
            )
        self._audited("dlq_redrive", letter, {"new_message_id": new_message_id, "recorded": str(recorded).lower()})
        scan.delete(letter)
        logger.info(
            "billing.retry.redriven",
            extra={
                "event": "billing.retry.redriven",
                "new_message_id": new_message_id,
                "recorded": recorded,
                "actor": self._context.actor,
                **letter.describe(),
            },
        )
        return RedrivenMessage(letter.message_id, new_message_id, request.execution_id if request else None, recorded)

    def _audited(self, action: str, letter: DeadLetter, details: dict[str, str]) -> None:
        if self._audit is None:
            return
        request = letter.request
        self._audit(
            operator_action(
                action,
                actor=self._context.actor,
                resource_type="retry_message",
                resource_id=letter.message_id,
                tenant_id=request.tenant_id if request else None,
                correlation_id=request.correlation_id if request else None,
                source="billing.aws.dead_letters",
                details={
                    **({"execution_id": str(request.execution_id), "attempt": str(request.attempt)} if request else {}),
                    **details,
                },
            )
        )

    def _scan(self) -> _Scan:
        return _Scan(self._client, self._dlq_url, self._wait_seconds, self._scan_visibility, self._empty_receives)


class _Scan:
    """Reads a queue once, hiding what it read; on exit, everything read and not deleted becomes visible again."""

    def __init__(self, client: Any, queue_url: str, wait_seconds: int, visibility: int, empty_receives: int) -> None:
        self._client = client
        self._queue_url = queue_url
        self._wait_seconds = wait_seconds
        self._visibility = visibility
        self._empty_receives = empty_receives
        self._held: dict[str, str] = {}  # message id -> receipt handle, read and not deleted
        self._seen: set[str] = set()

    def __enter__(self) -> _Scan:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for receipt_handle in self._held.values():
            self._client.change_message_visibility(
                QueueUrl=self._queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=0
            )
        self._held.clear()

    def __iter__(self) -> Iterator[DeadLetter]:
        empty = 0
        while empty < self._empty_receives:
            messages = self._client.receive_message(
                QueueUrl=self._queue_url,
                MaxNumberOfMessages=_MAX_PER_RECEIVE,
                WaitTimeSeconds=self._wait_seconds,
                VisibilityTimeout=self._visibility,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            fresh = [_letter(m) for m in messages if m["MessageId"] not in self._seen]
            empty = 0 if fresh else empty + 1
            # Held before the first is yielded: a caller that stops early must still release the whole batch.
            for letter in fresh:
                self._seen.add(letter.message_id)
                self._held[letter.message_id] = letter.receipt_handle
            yield from fresh

    def delete(self, letter: DeadLetter) -> None:
        self._client.delete_message(QueueUrl=self._queue_url, ReceiptHandle=letter.receipt_handle)
        self._held.pop(letter.message_id, None)


def _letter(message: Mapping[str, Any]) -> DeadLetter:
    attributes = message.get("Attributes", {})
    sent = attributes.get("SentTimestamp")
    return DeadLetter(
        message_id=message["MessageId"],
        body=message["Body"],
        receipt_handle=message["ReceiptHandle"],
        sent_at=datetime.fromtimestamp(int(sent) / 1000, UTC) if sent else None,
        receive_count=int(attributes.get("ApproximateReceiveCount", 0)),
        attributes={
            name: value["StringValue"]
            for name, value in message.get("MessageAttributes", {}).items()
            if "StringValue" in value
        },
    )


# -- command line ------------------------------------------------------------------------------------------------

ToolFactory = Callable[[argparse.Namespace], tuple[DeadLetterTool, Callable[[UUID, UUID], Execution | None]]]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m billing.aws.dead_letters", description="Inspect, redrive and purge the retry DLQ."
    )
    parser.add_argument("--dlq-url", default=os.environ.get(names.ENV_DLQ_URL), help="default: $DLQ_URL")
    parser.add_argument(
        "--queue-url", default=os.environ.get(names.ENV_RETRY_QUEUE_URL), help="default: $RETRY_QUEUE_URL"
    )
    parser.add_argument("--operator", default=None, help="who is acting, recorded on redrives (default: login)")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="list parked messages, oldest first")
    listing.add_argument("--limit", type=int, default=None)
    show = commands.add_parser("show", help="one parked message and its execution")
    show.add_argument("message_id")
    redrive = commands.add_parser("redrive", help="move parked messages back to the retry queue")
    which = redrive.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true")
    which.add_argument("--id", dest="ids", action="append", metavar="MESSAGE_ID")
    purge = commands.add_parser("purge", help="delete every parked message")
    purge.add_argument("--yes", action="store_true", help="confirm: the messages are deleted for good")
    return parser


def _default_tools(args: argparse.Namespace) -> tuple[DeadLetterTool, Callable[[UUID, UUID], Execution | None]]:
    import boto3

    from billing.audit import record_audit_event
    from billing.db.attempts import AttemptLedger
    from billing.db.connection import connect
    from billing.db.connection_provider import database_url_from_environment
    from billing.db.execution_repository import ExecutionRepository

    conn = connect(database_url_from_environment(), application_name="billing-dead-letters")
    repository = ExecutionRepository(conn)
    operator = args.operator or getpass.getuser()
    tool = DeadLetterTool(
        boto3.client("sqs"),
        args.dlq_url,
        args.queue_url,
        AttemptLedger(conn),
        context=WorkflowWriteContext.user(operator),
        audit=lambda event: record_audit_event(conn, event),
    )
    return tool, repository.get


def main(argv: list[str] | None = None, *, tools: ToolFactory = _default_tools) -> int:
    """The CLI; prints JSON lines on stdout, log lines go to stderr."""
    args = _parser().parse_args(argv)
    if not args.dlq_url or not args.queue_url:
        print("error: set DLQ_URL and RETRY_QUEUE_URL, or pass --dlq-url and --queue-url", file=sys.stderr)
        return 2
    if args.command == "purge" and not args.yes:
        print("error: purge deletes every parked message for good; add --yes to confirm", file=sys.stderr)
        return 2
    # Log lines go to stderr while the command runs, so stdout carries only the command's JSON.
    handler = logger.registered_handler
    previous = handler.setStream(sys.stderr) if isinstance(handler, logging.StreamHandler) else None
    try:
        return _run(args, *tools(args))
    finally:
        if previous is not None and isinstance(handler, logging.StreamHandler):
            handler.setStream(previous)


def _run(
    args: argparse.Namespace, tool: DeadLetterTool, find_execution: Callable[[UUID, UUID], Execution | None]
) -> int:
    match args.command:
        case "list":
            for letter in tool.list_parked(args.limit):
                print(json.dumps(letter.describe()))
        case "show":
            found = tool.show(args.message_id)
            if found is None:
                print(f"error: no message {args.message_id} in the dead-letter queue", file=sys.stderr)
                return 1
            view = found.describe()
            request = found.request
            execution = find_execution(request.tenant_id, request.execution_id) if request else None
            view["execution"] = (
                {
                    "status": execution.status.value,
                    "attempt_count": execution.attempt_count,
                    "last_error_code": execution.last_error_code,
                    "next_attempt_at": execution.next_attempt_at.isoformat() if execution.next_attempt_at else None,
                }
                if execution
                else None
            )
            print(json.dumps(view))
        case "redrive":
            report = tool.redrive(None if args.all else args.ids)
            print(json.dumps(report.as_dict()))
            return 1 if report.missing else 0
        case "purge":
            print(json.dumps({"purged": tool.purge(confirm=True)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
