"""`python -m billing.settlement run`: reconcile local settlement files by hand, as the function reconciles S3's.

    python -m billing.settlement run --provider adyen --file settlement_detail_report_batch_42.csv --date 2026-04-10
    python -m billing.settlement run --provider stripe --file payouts.csv --file payouts-2.csv --dry-run
    python -m billing.settlement run --provider sandbox --file 2026-04-10.csv --out reports/

The files are read as the settlement function reads a provider's day (streamed, any of the three formats, each
named by its base name) and reconciled against the database: DATABASE_URL_BILLING_WORKER, DATABASE_URL, or
locally the embedded server as billing_worker. The report is saved (unless --dry-run) exactly as the function saves
it, and printed on stdout as JSON: report id, period, totals per currency, payouts with their computed and reported
figures, counts per class, file errors, and every discrepancy. --out DIR also writes its JSON, CSV and HTML under
DIR with the keys the reports bucket would use. No event is published: a hand run is not the schedule's.

The period is the day of --date (default: yesterday, UTC, as the schedule reports), or its ISO week with
--period weekly. Exit status: 0 when the report was made, 2 for arguments that cannot be run (a message says why).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TextIO

from billing.db.connection import connect
from billing.db.connection_provider import role_url_variable
from billing.db.roles import DatabaseRole, login_url
from billing.domain.errors import SettlementPeriodInvalid
from billing.resource_names import ReportPeriod
from billing.settlement.files import is_valid_provider
from billing.settlement.local_files import DirectoryStore, local_settlement_files
from billing.settlement.report import json_chunks
from billing.settlement.service import ProviderReporter, SettlementReportConfig
from billing.settlement.wiring import SettlementReportCommand

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own exit (2), with our program name
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _provider(value: str) -> str:
    if not is_valid_provider(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a provider name (lower case [a-z0-9_-], e.g. adyen)")
    return value


def _day(value: str) -> date:
    if not _DAY.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a day (YYYY-MM-DD)")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a calendar day") from None


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="python -m billing.settlement", description="Settlement reconciliation by hand.")
    commands = top.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = commands.add_parser("run", help="reconcile local settlement files against the database")
    run.add_argument("--provider", required=True, type=_provider, help="adyen, stripe, sandbox, ...")
    run.add_argument("--file", dest="files", action="append", required=True, type=Path, help="repeat for more")
    run.add_argument("--date", type=_day, help="the period's day (default: yesterday, UTC)")
    run.add_argument("--period", choices=[p.value for p in ReportPeriod], default=ReportPeriod.DAILY.value)
    run.add_argument("--dry-run", action="store_true", help="save nothing, write nothing")
    run.add_argument("--out", type=Path, help="also write the report's JSON, CSV and HTML under this directory")
    run.add_argument(
        "--row-by-row", action="store_true", help="read every line in Python, without staging the files in the database"
    )
    return top


def _database_url() -> str:
    found = os.environ.get(role_url_variable(DatabaseRole.WORKER)) or os.environ.get("DATABASE_URL")
    if found:
        return found
    from billing.local.embedded_postgres import database_url

    return login_url(database_url(), DatabaseRole.WORKER)


def run(args: argparse.Namespace, out: TextIO) -> int:
    try:
        files = local_settlement_files(args.files)
    except ValueError as exc:
        raise SystemExit(_usage_error(str(exc))) from None
    now = datetime.now(UTC)
    requested = {"period": args.period} | ({} if args.date is None else {"date": args.date})
    command = SettlementReportCommand.model_validate(requested)
    try:
        period = command.settlement_period(now.date())
    except SettlementPeriodInvalid as exc:
        raise SystemExit(_usage_error(str(exc))) from None
    outputs = None if args.out is None or args.dry_run else DirectoryStore(args.out)
    with connect(_database_url(), application_name="billing-settlement-cli") as conn:
        reporter = ProviderReporter(conn, outputs=outputs, config=SettlementReportConfig(staged=not args.row_by_row))
        with reporter.report(
            provider=args.provider, period=period, files=files, generated_at=now, persist=not args.dry_run
        ) as outcome:
            report = outcome.report
            extra: dict[str, Any] = {
                "created": report.created,
                "persisted": report.persisted,
                "outputs": None
                if outputs is None or report.keys is None
                else {kind: str(outputs.path_of(key)) for kind, key in report.keys.as_dict().items()},
                "sources": {file.source: str(path) for file, path in zip(files, args.files, strict=True)},
            }
            for chunk in json_chunks(report.summary, outcome.discrepancies(), extra=extra):
                out.write(chunk.decode())
    out.flush()
    return 0


def _usage_error(message: str) -> int:
    print(f"python -m billing.settlement run: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "run":
        return run(args, out or sys.stdout)
    raise AssertionError(args.command)  # pragma: no cover - argparse only accepts the commands above


if __name__ == "__main__":
    sys.exit(main())
