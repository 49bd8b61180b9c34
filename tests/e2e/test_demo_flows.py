"""`make demo`'s card vault and audit trail flows: scripts/demo.py run as a subprocess on a database of its own, and
the card number search it relies on, which must find a planted number wherever it is (a search that cannot find
anything would prove nothing)."""

from __future__ import annotations

import functools
import importlib.util
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from billing.audit.keys import KeyRing
from billing.audit.verify import verify
from billing.db.connection import connect
from billing.db.migrations import apply_migrations
from billing.db.roles import DatabaseRole, login_url
from billing.local.stack import LOCAL_CHECKPOINT_KEY, LOCAL_CHECKPOINT_KEY_ID
from billing.paths import REPO_ROOT
from tests.e2e.conftest import ENVIRONMENT_BEFORE_STACK

pytestmark = pytest.mark.e2e

PAN = "4242424242424242"
NOWHERE = re.compile(r"PAN (?:still )?found nowhere \((?P<tables>\d+) tables, (?P<columns>\d+) columns, handler log\)")
LOCAL_RING = KeyRing(LOCAL_CHECKPOINT_KEY_ID, {LOCAL_CHECKPOINT_KEY_ID: LOCAL_CHECKPOINT_KEY})


@functools.cache
def _demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_demo_script", REPO_ROOT / "scripts" / "demo.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while they are built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory, database_factory: Callable[[], str]) -> tuple[str, Path, str]:
    """scripts/demo.py on a fresh migrated database, its handler log in a folder of its own: (stdout, log, db)."""
    url = database_factory()
    with connect(url) as conn:
        apply_migrations(conn)
    state = tmp_path_factory.mktemp("demo-state")
    env = {**ENVIRONMENT_BEFORE_STACK, "DATABASE_URL": url, "BILLING_LOCAL_DIR": str(state)}
    run = subprocess.run(
        [sys.executable, "scripts/demo.py"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert run.returncode == 0, f"{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    return run.stdout, state / "demo-handlers.log", url


def test_demo_finds_the_saved_cards_number_in_no_table_and_no_log(demo_run: tuple[str, Path, str]) -> None:
    out, log, url = demo_run

    searches = [match.groupdict() for match in NOWHERE.finditer(out)]

    # Once after the save, once after the charge, the deactivation and the refused charge.
    assert len(searches) == 2, out
    for search in searches:
        # Every table of ours (executions, events, outbox, inbox, contracts, terms, card secrets, the audit trail...).
        assert int(search["tables"]) >= 15
        assert int(search["columns"]) >= 80
    assert "the same search finds the vault token in billing.contract_term_attrs.attr_value" in out
    assert '"number": "*****"' in out
    handler_log = log.read_text()
    assert "billing.vault.request" in handler_log
    assert re.search("[ -]?".join(PAN), handler_log) is None
    with connect(url) as conn:
        stored = conn.execute(
            "select count(*) as n from billing.contract_term_attrs where regexp_replace(attr_value, '[^0-9]', '', 'g')"
            " like %s",
            [f"%{PAN}%"],
        ).fetchone()
    assert stored == {"n": 0}


def test_demo_charges_the_card_then_refuses_it_once_deactivated(demo_run: tuple[str, Path, str]) -> None:
    out, _, _ = demo_run

    assert re.search(r"POST /executions  the saved card \(pi_\.\.\.\)\s+-> HTTP 201  completed", out), out
    assert re.search(r"DELETE /payment-instruments/\{id\}\s+-> HTTP 200  deactivated", out), out
    assert "its ciphertext, nonce and wrapped data key are null" in out
    assert re.search(r"the deactivated card\s+-> HTTP 422  payment_instrument_inactive", out), out
    assert "Content-Type: application/problem+json" in out


def test_demo_verifies_the_trail_proves_the_tokenization_and_lists_who_touched_the_card(
    demo_run: tuple[str, Path, str],
) -> None:
    out, _, url = demo_run

    assert "OK: every leaf, tree index and checkpoint verifies" in out
    proof = re.search(
        r"inclusion proof verified with billing\.audit\.merkle: tree size (\d+), root \S+, proof length (\d+)", out
    )
    assert proof is not None, out
    accessed = re.findall(r"^\s+\d\d:\d\d:\d\d\.\d{3}  (chd\.\w+)\s+(\w+)", out, flags=re.MULTILINE)
    assert accessed == [
        ("chd.tokenized", "succeeded"),
        ("chd.instrument_charged", "granted"),
        ("chd.instrument_deactivated", "granted"),
        ("chd.instrument_charged", "denied"),
    ]
    # Checked again outside any stack, with the fixed local key ring: what the next stack on the same database (the
    # embedded one keeps its data) will check too.
    with connect(login_url(url, DatabaseRole.AUDITOR)) as auditor:
        report = verify(auditor, LOCAL_RING)
    assert report.ok, report.problems
    assert report.checkpoints >= 1


def test_card_number_search_finds_a_planted_number_in_any_column_and_in_the_log(
    private_admin_url: str, tmp_path: Path
) -> None:
    demo = _demo()
    log = tmp_path / "handlers.log"
    log.write_text('{"message": "clean"}\n{"body": {"card": "4242-4242-4242-4242"}}\n')
    pattern = demo.card_number_pattern("4242 4242 4242 4242")
    clean = demo.search_everywhere(private_admin_url, pattern, None)
    with connect(private_admin_url) as admin:
        # The audit trail is exempt from the card guard (refusing an entry would lose evidence), so it can hold one.
        admin.execute(
            "insert into billing_audit.entries (event_type, outcome, actor, resource_type, details)"
            " values ('chd.tokenized', 'succeeded', 'test', 'payment_instrument', %s)",
            ['{"note": "4242 4242 4242 4242"}'],
        )

    planted = demo.search_everywhere(private_admin_url, pattern, log)

    assert clean.found == []
    assert clean.tables >= 15
    # The jsonb column, the bytea leaf the trigger built from it, and the log line.
    assert planted.found == ["billing_audit.entries.details", "billing_audit.entries.leaf", "handlers.log line 2"]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("4242424242424242", True),
        ("4242 4242 4242 4242", True),
        ("4242-4242-4242-4242", True),
        ("x4242\u00a04242.4242/4242y", True),
        ("424242424242424", False),
        ("4242 4242 4242 424", False),
        ("42424242", False),
    ],
)
def test_card_number_pattern_matches_the_digits_however_separated(text: str, found: bool) -> None:
    assert (re.search(_demo().card_number_pattern(" 4242 4242 4242 4242 "), text) is not None) is found


REPORTED = re.compile(
    r"^  (?P<provider>adyen|stripe): report (?P<id>[0-9a-f-]{36}), (?P<matched>\d+) items matched; (?P<found>.+)$",
    flags=re.MULTILINE,
)
HTML_REPORT = re.compile(r"^    HTML report: (?P<path>\S+\.html)$", flags=re.MULTILINE)


def test_demo_reconciles_its_adyen_and_stripe_charges_from_the_providers_report_formats(
    demo_run: tuple[str, Path, str],
) -> None:
    out, _, url = demo_run

    reports = {match["provider"]: match for match in REPORTED.finditer(out)}
    html = [Path(match["path"]) for match in HTML_REPORT.finditer(out)]

    # Adyen: the 49.00 and 120.00 charges and the recorded 10.00 refund match; the 19.99 charge left out of the
    # file and the 5.00 partial refund nobody recorded are flagged.
    assert reports["adyen"]["found"] == "missing_from_file 1, reversal_missing 1", out
    assert int(reports["adyen"]["matched"]) == 3
    assert re.search(r"payout \d+ EUR: items net 152\.81 EUR, payout line 152\.81 EUR -> balances", out), out
    assert re.search(r"reversal_missing\s+line \d+\s+provider Refunded 5\.00 EUR; no refund of that amount", out)
    assert re.search(r"missing_from_file\s+our charge\s+completed 19\.99 EUR; no adyen file listed it", out), out
    # Stripe: every charge made through Stripe and both partial refunds of section 20 match, each refund by its
    # amount; the payout is 5.00 EUR short of its items.
    assert reports["stripe"]["found"] == "payout_mismatch 1", out
    assert int(reports["stripe"]["matched"]) >= 5
    assert re.search(r"payout po_\w+ EUR: items net [\d.]+ EUR, payout line [\d.]+ EUR -> does not balance "
                     r"\(-5\.00 EUR\)", out), out  # fmt: skip
    # Each report saved, and its self-contained page written under the local state folder.
    assert len(html) == 2
    adyen_page, stripe_page = (path.read_text() for path in html)
    assert 'id="payouts"' in adyen_page
    assert 'id="class-missing_from_file"' in adyen_page
    assert 'id="class-reversal_missing"' in adyen_page
    assert 'id="class-payout_mismatch"' in stripe_page
    with connect(url) as conn:
        saved = conn.execute(
            "select provider, discrepancy_count, payouts_balance from billing.settlement_reports where id = any(%s)"
            " order by provider",
            [[reports["adyen"]["id"], reports["stripe"]["id"]]],
        ).fetchall()
    assert saved == [
        {"provider": "adyen", "discrepancy_count": 2, "payouts_balance": True},
        {"provider": "stripe", "discrepancy_count": 1, "payouts_balance": False},
    ]
