"""`python -m billing.settlement run`: local files reconciled against the database as the function reconciles S3's."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from billing.db.connection import Connection
from billing.settlement.__main__ import main
from billing.settlement.outcome import DiscrepancyClass
from billing.settlement.reconciliation.reading import ADYEN_SDR
from tests.integration import settlement_run_rig
from tests.integration.settlement_run_rig import (
    completed_at_provider,
    saved_discrepancies,
    saved_reports,
    today,
)
from tests.unit.settlement.reconciliation_factories import adyen_file, adyen_row

# The rig's fixtures, used here by name.
not_just_before_midnight = settlement_run_rig.not_just_before_midnight

C = DiscrepancyClass
BATCH = "settlement_detail_report_batch_3.csv"


def run_cli(argv: list[str]) -> dict[str, Any]:
    out = io.StringIO()
    assert main(argv, out) == 0
    printed: dict[str, Any] = json.loads(out.getvalue())
    return printed


@pytest.fixture
def worker_database(private_db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The CLI connects as the settlement function does: billing_worker, here through DATABASE_URL."""
    monkeypatch.delenv("DATABASE_URL_BILLING_WORKER", raising=False)
    monkeypatch.setenv("DATABASE_URL", private_db_url)
    return private_db_url


def test_the_cli_reconciles_a_local_file_saves_the_report_and_prints_it(
    worker_database: str, app_db: Connection, private_admin: Connection, tmp_path: Path
) -> None:
    paid = completed_at_provider(app_db, "adyen", "1111222233334444", amount=1999)
    unlisted = completed_at_provider(app_db, "adyen", "5555666677778888", amount=700)
    day = today().isoformat()
    when = {"Creation Date": f"{day} 08:00:00", "TimeZone": "UTC", "Batch Number": ""}
    path = tmp_path / BATCH
    path.write_bytes(
        adyen_file(
            adyen_row("Settled", "1111222233334444", gross="19.99", net="19.60", cells=when),
            adyen_row("MerchantPayout", "", net="-19.00", cells=when),
        )
    )
    argv = ["run", "--provider", "adyen", "--file", str(path), "--date", day, "--out", str(tmp_path / "out")]

    printed = run_cli(argv)

    assert (printed["provider"], printed["period"], printed["created"], printed["persisted"]) == (
        "adyen",
        {"start": day, "end": printed["period"]["end"]},
        True,
        True,
    )
    assert [(f["source"], f["format"], f["records"]) for f in printed["files"]] == [(BATCH, ADYEN_SDR, 2)]
    assert printed["sources"] == {BATCH: str(path)}
    assert [(p["batch"], p["computed_net"], p["reported"], p["balances"]) for p in printed["payouts"]] == [
        ("3", 1960, 1900, False)
    ]
    assert [(t["currency"], t["settled"], t["expected_settled"]) for t in printed["totals"]] == [("EUR", 1999, 2699)]
    assert (printed["counts"]["matched"], printed["counts"]["payout_mismatch"], printed["file_errors"]) == (1, 1, [])
    assert sorted((d["class"], d["execution_id"]) for d in printed["discrepancies"]) == [
        (C.MISSING_FROM_FILE.value, str(unlisted.id)),
        (C.PAYOUT_MISMATCH.value, None),
    ]
    (saved,) = saved_reports(private_admin)
    assert str(saved["id"]) == printed["report_id"]
    assert len(saved_discrepancies(private_admin, saved["id"])) == 2
    outputs = printed["outputs"]
    assert {Path(outputs[k]).suffix for k in ("json", "csv", "html")} == {".json", ".csv", ".html"}
    assert json.loads(Path(outputs["json"]).read_text())["report_id"] == printed["report_id"]
    assert Path(outputs["html"]).read_text().startswith("<!DOCTYPE html>")
    assert paid.provider_reference == "1111222233334444"

    again = run_cli(argv)

    assert (again["report_id"], again["created"]) == (printed["report_id"], False)
    assert len(saved_reports(private_admin)) == 1


def test_a_dry_run_saves_and_writes_nothing(
    worker_database: str, app_db: Connection, private_admin: Connection, tmp_path: Path
) -> None:
    completed_at_provider(app_db, "adyen", "1111222233334444", amount=1999)
    path = tmp_path / BATCH
    path.write_bytes(adyen_file(adyen_row("Settled", "1111222233334444", gross="19.99", net="19.60")))
    out = tmp_path / "out"

    printed = run_cli(
        [
            "run",
            "--provider",
            "adyen",
            "--file",
            str(path),
            "--date",
            today().isoformat(),
            "--dry-run",
            "--out",
            str(out),
        ]
    )

    assert (printed["persisted"], printed["created"], printed["outputs"], printed["counts"]["matched"]) == (
        False,
        False,
        None,
        1,
    )
    assert (saved_reports(private_admin), out.exists()) == ([], False)


def test_row_by_row_prints_the_report_the_staged_run_prints(
    worker_database: str, app_db: Connection, private_admin: Connection, tmp_path: Path
) -> None:
    completed_at_provider(app_db, "adyen", "1111222233334444", amount=1999)
    completed_at_provider(app_db, "adyen", "5555666677778888", amount=700)
    when = {"Creation Date": f"{today().isoformat()} 08:00:00", "TimeZone": "UTC"}
    path = tmp_path / BATCH
    path.write_bytes(
        adyen_file(
            adyen_row("Settled", "1111222233334444", gross="19.99", net="19.60", cells=when),
            adyen_row("Settled", "5555666677778888", gross="7.10", net="7.00", cells=when),
        )
    )
    argv = ["run", "--provider", "adyen", "--file", str(path), "--date", today().isoformat(), "--dry-run"]

    staged, row_by_row = run_cli(argv), run_cli([*argv, "--row-by-row"])

    assert (staged["counts"]["matched"], staged["counts"]["amount_mismatch"]) == (1, 1)
    # the same in everything but when each was generated (which the report id does not cover)
    assert staged.pop("generated_at") <= row_by_row.pop("generated_at")
    assert staged == row_by_row


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--provider", "Adyen", "--file", "x.csv"], "'Adyen' is not a provider name"),
        (["run", "--provider", "adyen"], "the following arguments are required: --file"),
        (["run", "--provider", "adyen", "--file", "/no/such/file.csv"], "/no/such/file.csv: no such file"),
        (["run", "--provider", "adyen", "--file", "pyproject.toml", "--date", "2026-02-30"], "not a calendar day"),
        (["run", "--provider", "adyen", "--file", "pyproject.toml", "--date", "2999-01-01"], "is in the future"),
        (["run", "--provider", "adyen", "--file", "pyproject.toml", "--file", "./pyproject.toml"], "two files"),
    ],
)
def test_arguments_that_cannot_be_run_exit_2_with_a_message(argv: list[str], message: str) -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "billing.settlement", *argv], capture_output=True, text=True, timeout=60, check=False
    )

    assert (finished.returncode, finished.stdout) == (2, "")
    assert message in finished.stderr
