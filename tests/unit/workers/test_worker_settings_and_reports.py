"""Worker settings read at cold start, their schedules and leases, the reconciliation report, and how a parked
message describes itself."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from pydantic import ValidationError

from billing import resource_names as names
from billing.aws.dead_letters import DeadLetter
from billing.aws.retry_queue import encode_retry
from billing.domain.status import ExecutionStatus
from billing.outbox.relay import DEFAULT_LEASE_DURATION, DEFAULT_MAX_ATTEMPTS, DEFAULT_RETRY_BACKOFF
from billing.services.ports import RetryRequest
from billing.services.reconciliation import (
    Action,
    Finding,
    ReconcileConfig,
    ReconciliationReport,
    StopReason,
    Sweep,
)
from billing.worker_wiring import ReconcileSettings, RetrySettings

QUEUES = {names.ENV_RETRY_QUEUE_URL: "https://sqs/retry", names.ENV_DLQ_URL: "https://sqs/dlq"}


def test_retry_settings_without_overrides_use_the_documented_backoff() -> None:
    backoff = RetrySettings.model_validate(QUEUES).backoff()

    assert (backoff.base_seconds, backoff.cap_seconds) == (2.0, 3600.0)


@pytest.mark.parametrize("missing", [names.ENV_RETRY_QUEUE_URL, names.ENV_DLQ_URL])
def test_retry_settings_without_a_queue_url_fail(missing: str) -> None:
    with pytest.raises(ValidationError, match=missing):
        RetrySettings.model_validate({k: v for k, v in QUEUES.items() if k != missing})


@pytest.mark.parametrize(
    "overrides",
    [
        {"RETRY_BACKOFF_BASE_SECONDS": "0"},
        {"RETRY_BACKOFF_BASE_SECONDS": "60", "RETRY_BACKOFF_CAP_SECONDS": "30"},
        {"RETRY_BACKOFF_CAP_SECONDS": "soon"},
    ],
)
def test_retry_settings_with_an_impossible_backoff_fail(overrides: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        RetrySettings.model_validate({**QUEUES, **overrides})


def test_reconcile_settings_turn_seconds_into_the_worker_config() -> None:
    settings = ReconcileSettings.model_validate(
        {
            "RECONCILE_PENDING_AFTER_SECONDS": "60",
            "RECONCILE_MAX_PENDING_AGE_SECONDS": "86400",
            "RECONCILE_STUCK_AFTER_SECONDS": "900",
            "RECONCILE_BATCH_SIZE": "50",
            "RECONCILE_CUSTOMER_ACTION_TIMEOUT_SECONDS": "1800",
        }
    )

    assert settings.config() == ReconcileConfig(
        pending_after=timedelta(minutes=1),
        max_pending_age=timedelta(days=1),
        stuck_after=timedelta(minutes=15),
        batch_size=50,
        customer_action_timeout=timedelta(minutes=30),
    )
    assert ReconcileSettings.model_validate({}).config() == ReconcileConfig()


@pytest.mark.parametrize(
    "fields",
    [
        {"batch_size": 0},
        {"stuck_after": timedelta(seconds=-1)},
        {"lease_duration": timedelta(0)},
        {"recheck_after": timedelta(0)},
        {"recheck_after": timedelta(hours=2), "recheck_cap": timedelta(hours=1)},
        {"customer_action_timeout": timedelta(0)},
    ],
)
def test_reconcile_config_refuses_nonsense(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"must be positive|negative|0 < base <= cap"):
        ReconcileConfig(**fields)


@pytest.mark.parametrize("seconds", ["0", "-60", "an hour"])
def test_reconcile_settings_with_an_impossible_customer_action_timeout_fail(seconds: str) -> None:
    with pytest.raises(ValidationError, match=names.ENV_RECONCILE_CUSTOMER_ACTION_TIMEOUT_SECONDS):
        ReconcileSettings.model_validate({names.ENV_RECONCILE_CUSTOMER_ACTION_TIMEOUT_SECONDS: seconds})


def test_reconcile_customer_action_timeout_defaults_to_an_hour() -> None:
    assert ReconcileConfig().customer_action_timeout == timedelta(hours=1)
    assert ReconcileSettings.model_validate({}).config().customer_action_timeout == timedelta(hours=1)


def test_reconcile_recheck_doubles_from_just_under_the_schedule_up_to_an_hour() -> None:
    policy = ReconcileConfig().recheck_policy()

    waits = [timedelta(seconds=policy.ceiling(attempt)) for attempt in range(1, 8)]

    assert waits[0] < timedelta(minutes=5), "asked again on the next 5-minute run"
    assert waits == [timedelta(minutes=m) for m in (4, 8, 16, 32, 60, 60, 60)]


def test_reconcile_lease_outlasts_a_whole_run_of_the_reconcile_function() -> None:
    # The function stops after 4 minutes (infra/functions.py); a live worker's leases must not lapse under it.
    assert ReconcileConfig().lease_duration > timedelta(minutes=4)


def test_relay_backoff_and_lease_defaults() -> None:
    waits = [DEFAULT_RETRY_BACKOFF.ceiling(attempt) for attempt in range(1, DEFAULT_MAX_ATTEMPTS + 1)]

    assert waits[:6] == [30, 60, 120, 240, 300, 300]
    # Parked after almost two hours of failures, as docs/events.md says.
    assert timedelta(hours=1, minutes=45) < timedelta(seconds=sum(waits[:-1])) < timedelta(hours=2)
    # The relay function stops after 50 s (infra/functions.py); a live relay's leases must not lapse under it.
    assert timedelta(seconds=50) < DEFAULT_LEASE_DURATION


def finding(action: Action, *, to_status: ExecutionStatus | None = None, flagged: bool = False) -> Finding:
    return Finding(
        sweep=Sweep.SETTLEMENT,
        tenant_id=uuid4(),
        execution_id=uuid4(),
        action=action,
        from_status=ExecutionStatus.PENDING,
        to_status=to_status,
        provider_outcome=None,
        provider_reference="sbx_1",
        error_code=None,
        waited_seconds=12.34,
        flagged=flagged,
    )


def test_report_counts_every_action_and_separates_changes_from_flags() -> None:
    report = ReconciliationReport(
        dry_run=False,
        batches=2,
        stop_reason=StopReason.DRAINED,
        findings=(
            finding(Action.COMPLETED, to_status=ExecutionStatus.COMPLETED),
            finding(Action.COMPLETED, to_status=ExecutionStatus.COMPLETED),
            finding(Action.STILL_PENDING, flagged=True),
            finding(Action.PROVIDER_UNAVAILABLE),
        ),
    )

    summary = report.summary()

    assert summary["counts"] == {
        "completed": 2,
        "failed": 0,
        "expired": 0,
        "settlement_pending": 0,
        "still_pending": 1,
        "missing_at_provider": 0,
        "provider_unavailable": 1,
        "conflict": 0,
        "error": 0,
        "lease_lost": 0,
    }
    assert (summary["examined"], summary["changed"], summary["flagged"]) == (4, 2, 1)
    assert report.flagged[0].as_dict()["waited_seconds"] == 12.3


def test_finding_of_an_execution_left_as_it_was_says_when_it_is_asked_again() -> None:
    later = datetime(2026, 4, 10, 12, 4, tzinfo=UTC)

    left = replace(finding(Action.PROVIDER_UNAVAILABLE), next_check_at=later)

    assert left.as_dict()["next_check_at"] == "2026-04-10T12:04:00+00:00"
    assert finding(Action.COMPLETED, to_status=ExecutionStatus.COMPLETED).as_dict()["next_check_at"] is None


def test_parked_retry_message_describes_its_execution() -> None:
    request = RetryRequest(uuid4(), uuid4(), 4, datetime(2026, 4, 10, tzinfo=UTC), "corr-9")
    letter = DeadLetter("m-1", encode_retry(request), "r-1", None, 5, {"reason": "retries_exhausted"})

    described = letter.describe()

    assert letter.request == request
    assert (described["execution_id"], described["attempt"], described["body"]) == (str(request.execution_id), 4, None)


@pytest.mark.parametrize("body", ["", "[]", "{}", '{"tenant_id": "not-a-uuid"}'])
def test_parked_poison_message_has_no_request_and_shows_its_body(body: str) -> None:
    letter = DeadLetter("m-1", body, "r-1", None, 5)

    assert letter.request is None
    assert letter.describe()["body"] == body
