"""LocalStack's configuration and periodic jobs, without starting any service (see tests/e2e for the real thing)."""

from __future__ import annotations

import threading

import pytest

from billing.local.stack import DEFAULT_PORT, LocalStack, PeriodicJob


def test_port_defaults_to_8080_and_port_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PORT", raising=False)
    assert LocalStack().port == DEFAULT_PORT == 8080

    monkeypatch.setenv("PORT", "9091")
    assert LocalStack().port == 9091
    assert LocalStack(port=0).port == 0


@pytest.mark.parametrize("value", ["abc", "-1", "70000"])
def test_port_env_that_is_not_a_port_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("PORT", value)

    with pytest.raises(ValueError, match="PORT"):
        LocalStack()


def test_base_url_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not running"):
        _ = LocalStack(port=0).base_url


def test_periodic_job_survives_a_failing_run_and_stops_when_cancelled() -> None:
    calls: list[int] = []
    second_run = threading.Event()

    def flaky() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("first run fails")
        second_run.set()

    job = PeriodicJob("flaky", 0.01, flaky)
    job.start()
    assert second_run.wait(timeout=10)
    job.cancel()
    after_cancel = len(calls)

    assert job.failures == 1
    assert job.runs == after_cancel
    assert not job.running
    job.start()  # a cancelled job never starts again
    job.cancel()
    assert len(calls) == after_cancel


def test_stop_cancels_the_registered_jobs() -> None:
    stack = LocalStack(port=0)
    ran = threading.Event()
    job = stack.every(0.01, "probe", ran.set)
    job.start()
    assert ran.wait(timeout=10)

    stack.stop()

    assert not job.running  # cancel() joined the thread: no run can follow


def test_every_refuses_a_non_positive_interval() -> None:
    with pytest.raises(ValueError, match="positive"):
        LocalStack(port=0).every(0, "never", lambda: None)
