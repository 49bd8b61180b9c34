"""moto buckets and bus, a recording observer, and the settlement service as the function builds it.

Shared by the settlement report's integration tests (sandbox files, provider formats, the CLI). The report is
built on billing_worker (`db`, the settlement function's role) against executions the app role made (`app_db`);
the admin connection only inspects what was saved.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final
from uuid import UUID, uuid4

import boto3
import pytest
from moto import mock_aws

from billing.db.connection import Connection
from billing.db.execution_repository import ExecutionRepository
from billing.db.reversal_repository import ProviderReversal, ReversalRepository
from billing.domain.execution import Execution
from billing.domain.money import Money
from billing.domain.reversals import ReversalKind, ReversalStatus
from billing.domain.workflow import WorkflowWriteContext
from billing.resource_names import EVENT_BUS_NAME, SETTLEMENT_EVENT_SOURCE
from billing.settlement.events import EventBridgeReportPublisher
from billing.settlement.outcome import Discrepancy, DiscrepancyClass, ReportSummary
from billing.settlement.report import ReportKeys
from billing.settlement.s3 import S3ObjectStore
from billing.settlement.service import SettlementReportService
from tests.factories import execution_request

CTX = WorkflowWriteContext.service_default()
REGION: Final = "eu-west-1"
FILES_BUCKET: Final = "billing-provider-settlement-files-123456789012-eu-west-1"
REPORTS_BUCKET: Final = "billing-reports-123456789012-eu-west-1"
# Far longer than any test here takes: its charges and its report all fall on one UTC day.
MIDNIGHT_MARGIN: Final = timedelta(seconds=30)


@pytest.fixture(autouse=True)
def not_just_before_midnight() -> None:
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    if midnight - now < MIDNIGHT_MARGIN:
        pytest.skip("too close to midnight UTC: the test's charges could fall on two days")


@dataclass(frozen=True)
class Aws:
    s3: Any
    events: Any
    sqs: Any
    tap_url: str

    def received(self) -> list[dict[str, Any]]:
        """Every event the bus delivered to the test's queue (a rule on the settlement source)."""
        found: list[dict[str, Any]] = []
        while batch := self.sqs.receive_message(QueueUrl=self.tap_url, MaxNumberOfMessages=10).get("Messages"):
            found += [json.loads(m["Body"]) for m in batch]
            for message in batch:
                self.sqs.delete_message(QueueUrl=self.tap_url, ReceiptHandle=message["ReceiptHandle"])
        return found


@pytest.fixture
def aws_world(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        for bucket in (FILES_BUCKET, REPORTS_BUCKET):
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        events, sqs = boto3.client("events", region_name=REGION), boto3.client("sqs", region_name=REGION)
        events.create_event_bus(Name=EVENT_BUS_NAME)
        tap_url = sqs.create_queue(QueueName="settlement-tap")["QueueUrl"]
        tap_arn = sqs.get_queue_attributes(QueueUrl=tap_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(
            Name="settlement-tap",
            EventBusName=EVENT_BUS_NAME,
            EventPattern=json.dumps({"source": [SETTLEMENT_EVENT_SOURCE]}),
        )
        events.put_targets(Rule="settlement-tap", EventBusName=EVENT_BUS_NAME, Targets=[{"Id": "tap", "Arn": tap_arn}])
        yield Aws(s3, events, sqs, tap_url)


@pytest.fixture
def s3(aws_world: Aws) -> Any:
    return aws_world.s3


@dataclass
class Recorder:
    """The service's observer, remembering what it was told per report."""

    reports: list[ReportSummary] = field(default_factory=list)
    created: list[bool] = field(default_factory=list)
    samples: list[Mapping[DiscrepancyClass, Sequence[Discrepancy]]] = field(default_factory=list)
    keys: list[ReportKeys] = field(default_factory=list)

    def report_finished(
        self,
        summary: ReportSummary,
        keys: ReportKeys,
        samples: Mapping[DiscrepancyClass, Sequence[Discrepancy]],
        amounts: Mapping[DiscrepancyClass, Mapping[str, int]],
        *,
        created: bool,
    ) -> None:
        self.reports.append(summary)
        self.created.append(created)
        self.samples.append(samples)
        self.keys.append(keys)


def service(db: Connection, world: Aws, observer: Recorder | None = None) -> SettlementReportService:
    return SettlementReportService(
        db,
        S3ObjectStore(world.s3, FILES_BUCKET),
        S3ObjectStore(world.s3, REPORTS_BUCKET),
        observer or Recorder(),
        publisher=EventBridgeReportPublisher(world.events, EVENT_BUS_NAME),
    )


def today() -> date:
    return datetime.now(UTC).date()


def put_file(s3: Any, key: str, content: bytes) -> None:
    s3.put_object(Bucket=FILES_BUCKET, Key=key, Body=content)


def stored_json(s3: Any, key: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(s3.get_object(Bucket=REPORTS_BUCKET, Key=key)["Body"].read())
    return body


def stored_text(s3: Any, key: str) -> str:
    text: str = s3.get_object(Bucket=REPORTS_BUCKET, Key=key)["Body"].read().decode()
    return text


def report_keys(s3: Any) -> list[str]:
    listed = s3.list_objects_v2(Bucket=REPORTS_BUCKET, Prefix="reports/")
    return sorted(obj["Key"] for obj in listed.get("Contents", []))


def saved_reports(admin: Connection, provider: str | None = None) -> list[dict[str, Any]]:
    return admin.execute(
        "select id, provider, supersedes, superseded_by, discrepancy_count, payouts_balance, summary"
        " from billing.settlement_reports where %(provider)s::text is null or provider = %(provider)s"
        " order by created_at, id",
        {"provider": provider},
    ).fetchall()


def saved_discrepancies(admin: Connection, report_id: UUID) -> list[dict[str, Any]]:
    return admin.execute(
        "select * from billing.settlement_discrepancies where report_id = %s order by class, line_number, id",
        [report_id],
    ).fetchall()


def completed_at_provider(
    app_db: Connection, provider: str, reference: str | None, *, amount: int = 1999, currency: str = "EUR"
) -> Execution:
    """A new tenant's execution charged at `provider` and completed under `reference`, as the execute path writes it."""
    repository, tenant_id = ExecutionRepository(app_db), uuid4()
    execution, _ = repository.insert_idempotent(
        tenant_id,
        execution_request(amount=amount, currency=currency),
        idempotency_key=f"key-{uuid4()}",
        payment_provider=provider,
        correlation_id="corr-settlement",
        context=CTX,
    )
    repository.mark_pending(tenant_id, execution.id, CTX)
    repository.mark_processing(tenant_id, execution.id, CTX)
    return repository.mark_completed(tenant_id, execution.id, CTX, provider_reference=reference)


def provider_reversal(
    app_db: Connection, execution: Execution, kind: ReversalKind, amount: int, reference: str | None = None
) -> None:
    """A refund or chargeback the provider reported, recorded as the webhook path records it (as the app role)."""
    recorded = ReversalRepository(app_db).record_provider_reversal(
        ProviderReversal(
            tenant_id=execution.tenant_id,
            execution_id=execution.id,
            provider=execution.payment_provider,
            provider_event_id=f"evt_{uuid4().hex}",
            provider_event_type=kind.value,
            kind=kind,
            money=Money(amount, execution.currency),
            status=ReversalStatus.SUCCEEDED,
            provider_reference=reference or f"rv_{uuid4().hex[:16]}",
            reason=None,
            occurred_at=datetime.now(UTC),
        ),
        context=WorkflowWriteContext.webhook(execution.payment_provider),
        correlation_id=None,
        metadata={},
    )
    assert recorded is not None
