"""The compliance check passes on the real write path and names every method when the write path is off."""

from __future__ import annotations

import subprocess
import sys

from billing.db.connection import Connection
from billing.domain.transitions import TransitionMethod
from billing.workflow_compliance import BillingWorkflowCompliance


def test_compliance_with_authoritative_writes_passes_every_method_and_leaves_no_rows(conn: Connection) -> None:
    before = conn.execute("select count(*) as n from billing.billing_executions").fetchone()
    report = BillingWorkflowCompliance(conn).run()
    assert report.passed, report.render()
    assert [r.method for r in report.results] == list(TransitionMethod)
    assert conn.execute("select count(*) as n from billing.billing_executions").fetchone() == before


def test_compliance_with_authoritative_writes_off_fails_naming_each_method(conn: Connection) -> None:
    report = BillingWorkflowCompliance(conn, authoritative_write=False).run()
    assert not report.passed
    assert {f.method for f in report.failures} == set(TransitionMethod)
    assert all(f.problem == "emitted no workflow row" for f in report.failures)
    assert "NOT compliant: mark_pending" in report.render()


def test_compliance_cli_exits_zero_and_prints_verdict(db_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "billing.workflow_compliance", "--database-url", db_url],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "billing workflow writes: compliant" in result.stdout
    assert result.stdout.count("PASS") == len(TransitionMethod)


def test_compliance_cli_with_writes_disabled_exits_nonzero(db_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "billing.workflow_compliance", "--database-url", db_url],
        capture_output=True,
        text=True,
        check=False,
        env={"AUTHORITATIVE_WRITE_ENABLED": "false", "PATH": ""},
    )
    assert result.returncode == 1
    assert "FAIL  reconcile" in result.stdout
