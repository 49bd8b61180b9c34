"""DLQ tooling on moto SQS and real PostgreSQL: list, show, redrive (all or selected, each recorded), purge."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from types import ModuleType
from typing import Any
from uuid import UUID, uuid4

import boto3
import pytest
from moto import mock_aws

from billing import resource_names as names
from billing.aws.dead_letters import DeadLetterTool, SqsDeadLetterSink, main
from billing.aws.retry_queue import SqsRetryScheduler, encode_retry
from billing.db.attempts import AttemptLedger
from billing.db.connection import Connection
from billing.db.execution_repository import ExecutionRepository
from billing.domain.execution import Execution, PaymentRail
from billing.domain.status import ExecutionStatus
from billing.domain.transitions import REDRIVEN_EVENT_TYPE
from billing.domain.workflow import WorkflowWriteContext
from billing.observability import logger
from billing.rails.sandbox import SandboxProvider, connections_to
from billing.services.execution_driver import ExecutionDriver
from billing.services.ports import RetryRequest
from billing.services.retry_worker import RetryOutcome, RetryWorker
from tests.factories import QuietObserver, RecordingRetryScheduler, create_execution
from tests.lambda_harness import FakeLambdaContext, load_handler, set_function_environment

REGION = "eu-west-1"
OPERATOR = WorkflowWriteContext.user("ops-alice")


@dataclass
class Queues:
    client: Any
    retry_url: str
    dlq_url: str

    def visible(self, url: str) -> int:
        attributes = self.client.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(attributes["Attributes"]["ApproximateNumberOfMessages"])

    def bodies(self, url: str) -> list[str]:
        messages = self.client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)
        return [m["Body"] for m in messages.get("Messages", [])]


@pytest.fixture
def queues() -> Iterator[Queues]:
    with mock_aws():
        client = boto3.client("sqs", region_name=REGION)
        dlq_url = client.create_queue(QueueName=names.DEAD_LETTER_QUEUE_NAME)["QueueUrl"]
        retry_url = client.create_queue(QueueName=names.RETRY_QUEUE_NAME)["QueueUrl"]
        yield Queues(client, retry_url, dlq_url)


@pytest.fixture
def tool(queues: Queues, worker: Connection) -> DeadLetterTool:
    """The tooling as operators run it, on the retry function's role (billing_worker)."""
    # Short polling and one empty receive: moto answers at once, and long polling would wait for real.
    return DeadLetterTool(
        queues.client,
        queues.dlq_url,
        queues.retry_url,
        AttemptLedger(worker),
        context=OPERATOR,
        wait_seconds=0,
        empty_receives=1,
    )


def park(queues: Queues, request: RetryRequest) -> str:
    """A retry message parked in the DLQ, as the worker parks an exhausted one."""
    sink = SqsDeadLetterSink(queues.client, queues.dlq_url)
    return sink.park(encode_retry(request), request=request, reason="retries_exhausted", error_code="processing_error")


@pytest.fixture
def sandbox(db_url: str) -> SandboxProvider:
    return SandboxProvider(connections_to(db_url))


@pytest.fixture
def waiting_retry(conn: Connection, sandbox: SandboxProvider) -> Callable[[UUID], tuple[Execution, RetryRequest]]:
    """Makes an execution whose first attempt failed transiently, and the request for its second attempt (the
    execute path's drive, on billing_app's `conn`)."""

    def make(tenant_id: UUID) -> tuple[Execution, RetryRequest]:
        execution = create_execution(
            conn, tenant_id, payment_rail=PaymentRail.CARD, payment_instrument_id="tok_transient_1"
        )
        scheduled = RecordingRetryScheduler()
        driver = ExecutionDriver(
            ExecutionRepository(conn), {"sandbox": sandbox}, scheduled, QuietObserver(), jitter=lambda low, high: 0.0
        )
        driver.drive(execution, correlation_id="corr-dlq", context=WorkflowWriteContext.service_default())
        (request,) = scheduled.requests
        return execution, request

    return make


@pytest.fixture
def log_lines() -> Iterator[list[dict[str, Any]]]:
    """The structured log records the billing logger emits during the test."""
    records: list[dict[str, Any]] = []

    class KeepRecords(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append({"message": record.getMessage(), **record.__dict__})

    handler = KeepRecords()
    logger.addHandler(handler)
    yield records
    logging.getLogger(logger.name).removeHandler(handler)


def redriven_events(conn: Connection, execution: Execution) -> list[dict[str, Any]]:
    events = ExecutionRepository(conn).events(execution.tenant_id, execution.id)
    return [{"actor": e.user_id, **e.metadata} for e in events if e.type == REDRIVEN_EVENT_TYPE]


def test_list_shows_every_parked_message_and_leaves_the_queue_as_it_was(
    tool: DeadLetterTool, queues: Queues, tenant_id: UUID
) -> None:
    requests = [RetryRequest(tenant_id, uuid4(), 4, datetime.now(UTC), f"corr-{n}") for n in range(12)]
    ids = [park(queues, request) for request in requests]

    letters = tool.list_parked()

    assert sorted(letter.message_id for letter in letters) == sorted(ids)
    described = {letter.message_id: letter.describe() for letter in letters}
    assert described[ids[0]]["execution_id"] == str(requests[0].execution_id)
    assert described[ids[0]]["attributes"]["reason"] == "retries_exhausted"
    assert queues.visible(queues.dlq_url) == 12
    assert len(tool.list_parked(limit=5)) == 5
    assert queues.visible(queues.dlq_url) == 12


def test_show_finds_a_message_by_id_and_decodes_it_or_returns_none(
    tool: DeadLetterTool, queues: Queues, tenant_id: UUID
) -> None:
    request = RetryRequest(tenant_id, uuid4(), 3, datetime.now(UTC), "corr-show")
    message_id = park(queues, request)
    poison_id = queues.client.send_message(QueueUrl=queues.dlq_url, MessageBody="not json")["MessageId"]

    shown = tool.show(message_id)
    poison = tool.show(poison_id)

    assert shown is not None
    assert shown.request == request
    assert poison is not None
    assert poison.request is None
    assert poison.describe()["body"] == "not json"
    assert tool.show("no-such-message") is None
    assert queues.visible(queues.dlq_url) == 2


def test_redrive_of_selected_messages_moves_only_them_and_records_each_on_its_execution(
    tool: DeadLetterTool,
    queues: Queues,
    conn: Connection,
    tenant_id: UUID,
    waiting_retry: Callable[[UUID], tuple[Execution, RetryRequest]],
) -> None:
    (first, first_request), (second, second_request) = (waiting_retry(tenant_id) for _ in range(2))
    first_id, second_id = park(queues, first_request), park(queues, second_request)

    report = tool.redrive([first_id, "gone-already"])

    assert [m.message_id for m in report.redriven] == [first_id]
    assert report.redriven[0].recorded
    assert report.missing == ("gone-already",)
    assert queues.bodies(queues.retry_url) == [encode_retry(first_request)]
    assert [letter.message_id for letter in tool.list_parked()] == [second_id]
    (event,) = redriven_events(conn, first)
    assert (event["actor"], event["message_id"], event["attempt"]) == ("user:ops-alice", first_id, 2)
    assert event["new_message_id"] == report.redriven[0].new_message_id
    assert redriven_events(conn, second) == []


def test_redrive_all_moves_everything_and_the_worker_then_finishes_the_retries(
    tool: DeadLetterTool,
    queues: Queues,
    conn: Connection,
    worker: Connection,
    sandbox: SandboxProvider,
    tenant_id: UUID,
    waiting_retry: Callable[[UUID], tuple[Execution, RetryRequest]],
    log_lines: list[dict[str, Any]],
) -> None:
    # Given retries parked after crashes, while their executions still wait for that attempt
    waiting = [waiting_retry(tenant_id) for _ in range(3)]
    for _, request in waiting:
        park(queues, request)
    poison_id = queues.client.send_message(QueueUrl=queues.dlq_url, MessageBody="{}")["MessageId"]

    # When an operator redrives everything
    report = tool.redrive()

    # Then every message is back on the retry queue, each move logged and (where possible) recorded
    assert len(report.redriven) == 4
    assert [m.recorded for m in report.redriven if m.message_id == poison_id] == [False]
    assert queues.visible(queues.dlq_url) == 0
    logged = [line for line in log_lines if line["message"] == "billing.retry.redriven"]
    assert sorted(line["message_id"] for line in logged) == sorted(m.message_id for m in report.redriven)
    assert {line["actor"] for line in logged} == {"user:ops-alice"}

    # And the retry worker (its own role) completes the executions from the redriven messages
    providers = {"sandbox": sandbox}
    repository = ExecutionRepository(worker)
    retry_worker = RetryWorker(
        repository,
        AttemptLedger(worker),
        ExecutionDriver(repository, providers, RecordingRetryScheduler(), QuietObserver()),
        providers,
        SqsRetryScheduler(queues.client, queues.retry_url),
        SqsDeadLetterSink(queues.client, queues.dlq_url),
    )
    outcomes = [retry_worker.handle(request, body=encode_retry(request)).outcome for _, request in waiting]
    assert outcomes == [RetryOutcome.COMPLETED] * 3
    for execution, _ in waiting:
        final = ExecutionRepository(conn).get(tenant_id, execution.id)
        assert final is not None
        assert final.status is ExecutionStatus.COMPLETED
        assert len(redriven_events(conn, execution)) == 1


def test_redrive_of_a_retry_whose_execution_failed_meanwhile_is_still_recorded(
    tool: DeadLetterTool,
    queues: Queues,
    conn: Connection,
    tenant_id: UUID,
    waiting_retry: Callable[[UUID], tuple[Execution, RetryRequest]],
) -> None:
    execution, request = waiting_retry(tenant_id)
    ExecutionRepository(conn).mark_failed(
        tenant_id, execution.id, WorkflowWriteContext.system(), error_code="processing_error"
    )
    park(queues, request)

    report = tool.redrive()

    assert report.redriven[0].recorded  # terminal executions take the record too
    failed = ExecutionRepository(conn).get(tenant_id, execution.id)
    assert failed is not None
    assert failed.status is ExecutionStatus.FAILED


def test_purge_refuses_without_confirmation_then_deletes_everything(
    tool: DeadLetterTool, queues: Queues, tenant_id: UUID
) -> None:
    for _ in range(3):
        park(queues, RetryRequest(tenant_id, uuid4(), 2, datetime.now(UTC), None))

    with pytest.raises(PermissionError):
        tool.purge(confirm=False)
    assert queues.visible(queues.dlq_url) == 3

    assert tool.purge(confirm=True) == 3
    assert queues.visible(queues.dlq_url) == 0


# -- the command line --------------------------------------------------------------------------------------------


@pytest.fixture
def cli(tool: DeadLetterTool, queues: Queues, worker: Connection) -> Callable[..., int]:
    def run(*argv: str) -> int:
        return main(
            ["--dlq-url", queues.dlq_url, "--queue-url", queues.retry_url, *argv],
            tools=lambda args: (tool, ExecutionRepository(worker).get),
        )

    return run


def test_cli_list_show_and_redrive_print_json(
    cli: Callable[..., int],
    queues: Queues,
    conn: Connection,
    tenant_id: UUID,
    waiting_retry: Callable[[UUID], tuple[Execution, RetryRequest]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    execution, request = waiting_retry(tenant_id)
    message_id = park(queues, request)

    assert cli("list") == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [item["message_id"] for item in listed] == [message_id]

    assert cli("show", message_id) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["execution"] == {
        "status": "processing",
        "attempt_count": 1,
        "last_error_code": "processing_error",
        "next_attempt_at": shown["execution"]["next_attempt_at"],
    }
    assert cli("show", "unknown") == 1

    assert cli("redrive", "--id", message_id, "--id", "unknown") == 1  # one of the two was not found
    report = json.loads(capsys.readouterr().out)
    assert [m["message_id"] for m in report["redriven"]] == [message_id]
    assert report["missing"] == ["unknown"]
    assert len(redriven_events(conn, execution)) == 1


def test_cli_purge_without_yes_exits_2_and_deletes_nothing(
    cli: Callable[..., int], queues: Queues, tenant_id: UUID, capsys: pytest.CaptureFixture[str]
) -> None:
    park(queues, RetryRequest(tenant_id, uuid4(), 2, datetime.now(UTC), None))

    assert cli("purge") == 2
    assert "--yes" in capsys.readouterr().err
    assert queues.visible(queues.dlq_url) == 1

    assert cli("purge", "--yes") == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {"purged": 1}
    assert queues.visible(queues.dlq_url) == 0


def test_cli_without_queue_urls_exits_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(names.ENV_DLQ_URL, raising=False)
    monkeypatch.delenv(names.ENV_RETRY_QUEUE_URL, raising=False)

    assert main(["list"]) == 2
    assert "DLQ_URL" in capsys.readouterr().err


# -- the retry_dlq function, invoked by an operator ------------------------------------------------------------------


@pytest.fixture
def retry_function(worker_db_url: str, queues: Queues, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The retry_dlq function as deployed, connecting as its role (billing_worker)."""
    set_function_environment(
        monkeypatch,
        names.FunctionName.RETRY_DLQ,
        {
            "DATABASE_URL": worker_db_url,
            names.ENV_RETRY_QUEUE_URL: queues.retry_url,
            names.ENV_DLQ_URL: queues.dlq_url,
        },
    )
    return load_handler("retry_dlq")


def test_function_invoked_with_redrive_moves_selected_messages_and_records_the_operator(
    retry_function: ModuleType,
    queues: Queues,
    conn: Connection,
    tenant_id: UUID,
    waiting_retry: Callable[[UUID], tuple[Execution, RetryRequest]],
) -> None:
    # Long polling would wait for real in moto; the function's tool is otherwise the deployed one.
    retry_function.runtime.dead_letter_tool = _short_polling(retry_function.runtime.dead_letter_tool)
    execution, request = waiting_retry(tenant_id)
    message_id = park(queues, request)
    other_id = park(queues, RetryRequest(tenant_id, uuid4(), 2, datetime.now(UTC), None))

    result = retry_function.lambda_handler(
        {"redrive": True, "message_ids": [message_id], "operator": "ops-bob"}, FakeLambdaContext()
    )

    assert [m["message_id"] for m in result["redriven"]] == [message_id]
    assert queues.bodies(queues.retry_url) == [encode_retry(request)]
    (event,) = redriven_events(conn, execution)
    assert event["actor"] == "user:ops-bob"
    assert [m["MessageId"] for m in queues.client.receive_message(QueueUrl=queues.dlq_url)["Messages"]] == [other_id]


def test_function_invoked_with_an_unknown_command_is_refused(retry_function: ModuleType) -> None:
    with pytest.raises(ValueError, match="redrive"):
        retry_function.lambda_handler({"purge": True}, FakeLambdaContext())


def _short_polling(build: Callable[..., DeadLetterTool]) -> Callable[..., DeadLetterTool]:
    def short(*args: Any, **options: Any) -> DeadLetterTool:
        return build(*args, wait_seconds=0, empty_receives=1, **options)

    return short
