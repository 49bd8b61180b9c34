"""Guard-removing edits that the test suite must notice: `make mutants`.

Each mutant removes or weakens one guard (a trigger rule, a grant, a policy, a status guard in a statement, a
check in Python), is applied to a scratch copy of the tracked tree, and the suite runs there against a fresh
database. A mutant the suite does not fail on is a guard nothing tests; the script names it and exits 1.

    make mutants                 # every mutant
    make mutants ONLY=insert     # the mutants whose name contains "insert"

An edit whose text is no longer in its file is an error, not a pass: refactor the mutant with the code.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LEAST_PRIVILEGE = "sql/20261201_billing_least_privilege.sql"
REFUNDS = "sql/20261213_billing_refunds.sql"
AUTHENTICATIONS = "sql/20261215_billing_authentications.sql"
REPOSITORY = "layers/shared/python/billing/db/execution_repository.py"


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str


MUTANTS = [
    # --- row-level security and grants ------------------------------------------------------------------------
    Mutant(
        "outbox without row-level security",
        "sql/20260404_billing_row_level_security.sql",
        "select billing.enable_tenant_isolation('billing.billing_outbox');",
        "",
    ),
    Mutant(
        "row-level security not forced",
        LEAST_PRIVILEGE,
        "    execute format('alter table %s force row level security', target);",
        "    execute format('alter table %s no force row level security', target);",
    ),
    Mutant(
        "system scope open to every role",
        LEAST_PRIVILEGE,
        "'create policy worker_cross_tenant on %s to billing_worker using",
        "'create policy worker_cross_tenant on %s to public using",
    ),
    Mutant(
        "worker may delete outbox rows",
        LEAST_PRIVILEGE,
        "select billing.grant_dml('billing.billing_outbox', 'billing_worker', 'select, insert, update');",
        "select billing.grant_dml('billing.billing_outbox', 'billing_worker', 'select, insert, update, delete');",
    ),
    Mutant(
        "app may write the transition table",
        LEAST_PRIVILEGE,
        "select billing.grant_dml('billing.execution_status_transitions', 'billing_app', 'select');",
        "select billing.grant_dml('billing.execution_status_transitions', 'billing_app', 'select, insert');",
    ),
    # --- the execution row's own rules ------------------------------------------------------------------------
    Mutant(
        "terminal rows mutable",
        LEAST_PRIVILEGE,
        "    if old.status in ('completed', 'failed', 'canceled') then\n"
        "        raise exception 'billing.billing_executions row % is terminal (%) and immutable'",
        "    if false then\n        raise exception 'billing.billing_executions row % is terminal (%) and immutable'",
    ),
    Mutant(
        "payment_rail mutable",
        LEAST_PRIVILEGE,
        "    if (new.tenant_id, new.id, new.entity_contract_id, new.plan_contract_id, new.amount, new.currency,\n"
        "        new.payment_rail,",
        "    if (new.tenant_id, new.id, new.entity_contract_id, new.plan_contract_id, new.amount, new.currency,\n"
        "        old.payment_rail,",
    ),
    Mutant(
        "request_fingerprint mutable",
        LEAST_PRIVILEGE,
        "        new.request_fingerprint, new.correlation_id, new.metadata, new.created_at)",
        "        old.request_fingerprint, new.correlation_id, new.metadata, new.created_at)",
    ),
    Mutant(
        "metadata mutable",
        LEAST_PRIVILEGE,
        "        new.request_fingerprint, new.correlation_id, new.metadata, new.created_at)",
        "        new.request_fingerprint, new.correlation_id, old.metadata, new.created_at)",
    ),
    Mutant(
        "execution born completed",
        LEAST_PRIVILEGE,
        "    if new.status <> 'created' or new.provider_reference is not null",
        "    if new.provider_reference is not null",
    ),
    Mutant(
        "submitted_at can be unset",
        LEAST_PRIVILEGE,
        "    if old.submitted_at is not null and new.submitted_at is distinct from old.submitted_at then",
        "    if false then",
    ),
    Mutant(
        "attempt_count can shrink",
        LEAST_PRIVILEGE,
        "    if new.attempt_count < old.attempt_count then",
        "    if false then",
    ),
    Mutant(
        "completed without provider reference",
        LEAST_PRIVILEGE,
        "    if new.status = 'completed' and new.provider_reference is null then",
        "    if false then",
    ),
    Mutant(
        "submitted execution back to processing",
        LEAST_PRIVILEGE,
        "    if old.submitted_at is not null and new.status = 'processing' and old.status <> 'processing' then",
        "    if false then",
    ),
    # --- companion rows -----------------------------------------------------------------------------------
    Mutant(
        "event without its change",
        LEAST_PRIVILEGE,
        "    if recorded > made then",
        "    if false then",
    ),
    Mutant(
        "change without its event",
        LEAST_PRIVILEGE,
        "    if unrecorded is not null then",
        "    if false then",
    ),
    Mutant(
        "outbox row without its event",
        LEAST_PRIVILEGE,
        "        raise exception 'billing.billing_outbox: row for event % does not announce an event of this "
        "transaction',",
        "        return null; raise exception 'billing.billing_outbox: row for event % does not announce',",
    ),
    Mutant(
        "published_at rewritable",
        LEAST_PRIVILEGE,
        "    if old.published_at is not null and new.published_at is distinct from old.published_at then",
        "    if false then",
    ),
    Mutant(
        "reversal of an unfinished execution",
        LEAST_PRIVILEGE,
        "         where e.tenant_id = new.tenant_id and e.id = new.execution_id and e.status = 'completed'\n    ) then",
        "         where e.tenant_id = new.tenant_id and e.id = new.execution_id\n    ) then",
    ),
    # --- statements and Python ----------------------------------------------------------------------------
    Mutant(
        "transition without status guard",
        REPOSITORY,
        "     where e.tenant_id = %(tenant_id)s and e.id = %(execution_id)s and e.status = %(old_status)s\n"
        "       and (not %(unsubmitted_only)s",
        "     where e.tenant_id = %(tenant_id)s and e.id = %(execution_id)s\n       and (not %(unsubmitted_only)s",
    ),
    Mutant(
        "stale retry schedule accepted",
        REPOSITORY,
        "       and e.attempt_count = %(attempt)s\n",
        "\n",
    ),
    Mutant(
        "cancel of a submitted execution",
        REPOSITORY,
        "            from_status=from_status,\n            unsubmitted_only=True,",
        "            from_status=from_status,\n            unsubmitted_only=False,",
    ),
    Mutant(
        "fingerprint ignores the instrument",
        "layers/shared/python/billing/domain/execution.py",
        'canonical = json.dumps(self.model_dump(mode="json"),',
        'canonical = json.dumps(self.model_dump(mode="json", exclude={"payment_instrument_id"}),',
    ),
    Mutant(
        "webhook reference shared by two tenants applied",
        "layers/shared/python/billing/services/webhook_processing.py",
        "        if len(matches) > 1:",
        "        if len(matches) > 2:",
    ),
    Mutant(
        "refunds: not serialised per execution",
        REFUNDS,
        "    perform pg_advisory_xact_lock(hashtextextended('billing.refunds:' || new.tenant_id || ':' || "
        "new.execution_id, 0));",
        "",
    ),
    Mutant(
        "refunds: the cap ignores earlier refunds",
        REFUNDS,
        "         where r.tenant_id = e.tenant_id and r.execution_id = e.id and r.status <> 'failed' and r.amount "
        "is not null",
        "         where r.tenant_id = e.tenant_id and r.execution_id = e.id and false",
    ),
    Mutant(
        "refunds: a final reversal may change",
        REFUNDS,
        "    if old.status in ('succeeded', 'failed') then",
        "    if false then",
    ),
    Mutant(
        "risk: velocity not serialised per key",
        "sql/20261218_billing_risk_velocity_counts.sql",
        "    perform pg_advisory_xact_lock(k)\n",
        "    perform 1\n",
    ),
    Mutant(
        "risk: a retry counted again",
        "sql/20261218_billing_risk_velocity_counts.sql",
        "        on conflict (tenant_id, execution_id) do nothing;",
        "        on conflict (tenant_id, execution_id) do update set amount = excluded.amount;",
    ),
    Mutant(
        "risk: the database lets a held charge be submitted",
        AUTHENTICATIONS,
        "    if latest.decision = 'review' and not exists (",
        "    if false and not exists (",
    ),
    Mutant(
        "risk: a block is ignored by the driver",
        "layers/shared/python/billing/services/pre_submission.py",
        "                return AuthenticationStep(StepKind.REFUSE, error_code=RISK_BLOCKED_CODE)",
        "                return self._three_ds.decide(execution, verdict, context=context, "
        "correlation_id=correlation_id)",
    ),
    Mutant(
        "risk: an annotation may name a status held in another transaction",
        "sql/20261221_billing_annotation_in_claiming_transaction.sql",
        "               and not (e.changed_txid = pg_current_xact_id() and exists (",
        "               and not (exists (",
    ),
    Mutant(
        "risk: the claim is made after the decision's transaction",
        "layers/shared/python/billing/services/pre_submission.py",
        "            if claim_with is None or step.kind is not StepKind.PROCEED:",
        "            if True:",
    ),
    Mutant(
        "3ds: the low-value counter is read before the instrument's lock",
        "layers/shared/python/billing/risk/gate.py",
        "            counted = queue_count(conn, keys, record=record_attempt, as_rules_need=True)\n"
        "            earlier = queue_of_attempt(conn, tenant, execution.id, attempt)\n"
        "            if before is not None:\n"
        "                before(instrument.instrument_key)\n",
        "            if before is not None:\n"
        "                before(instrument.instrument_key)\n"
        "            counted = queue_count(conn, keys, record=record_attempt, as_rules_need=True)\n"
        "            earlier = queue_of_attempt(conn, tenant, execution.id, attempt)\n",
    ),
    Mutant(
        "3ds: an authentication value may be used twice",
        AUTHENTICATIONS,
        "    if old.value_used_at is not null and new.value_used_at is distinct from old.value_used_at then",
        "    if false then",
    ),
    Mutant(
        "3ds: the low-value counter is not checked",
        "layers/shared/python/billing/authentication/flow.py",
        "        return charges + 1 <= LOW_VALUE_MAX_CHARGES and total + amount.amount <= limit",
        "        return True",
    ),
    Mutant(
        "3ds: a rejection is reported as a mere failure",
        "layers/shared/python/billing/authentication/flow.py",
        '    AuthenticationState.REJECTED: "authentication_rejected",',
        "",
    ),
    Mutant(
        "stripe: a resubmission does not look for the earlier intent",
        "layers/shared/python/billing/providers/stripe/provider.py",
        "        if charge.attempt > 1:",
        "        if False:",
    ),
]


def _scratch_copy(target: Path, *, committed: bool = False) -> None:
    if committed:
        archive = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
        return
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    for name in files:
        source = REPO / name
        if source.is_file():
            destination = target / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)


def _apply(tree: Path, mutant: Mutant) -> None:
    path = tree / mutant.path
    text = path.read_text(encoding="utf-8")
    if text.count(mutant.old) != 1:
        raise SystemExit(f"mutant {mutant.name!r}: its text occurs {text.count(mutant.old)} times in {mutant.path}")
    path.write_text(text.replace(mutant.old, mutant.new), encoding="utf-8")


def _suite_fails(tree: Path, database_url: str) -> bool:
    # One server for every mutant (each test run makes its own databases on it); the scratch tree's package first.
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PYTHONPATH": str(tree / "layers/shared/python"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "tests/unit", "tests/integration"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
    )
    return result.returncode != 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", default="", help="run the mutants whose name contains this text")
    parser.add_argument("--skip-baseline", action="store_true", help="do not first check the unmutated copy passes")
    parser.add_argument("--committed", action="store_true", help="mutate HEAD instead of the working tree")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if args.only in m.name]
    sys.path.insert(0, str(REPO / "layers/shared/python"))
    from billing.local.embedded_postgres import database_url

    server = database_url()
    if not args.skip_baseline:
        # A mutant counts as caught only if the same copy without it passes: otherwise any failure would do.
        with tempfile.TemporaryDirectory(prefix="billing-baseline-") as scratch:
            _scratch_copy(Path(scratch), committed=args.committed)
            if _suite_fails(Path(scratch), server):
                print("the unmutated copy fails the suite: fix that first", file=sys.stderr)
                return 2
        print("baseline: the unmutated copy passes", flush=True)
    survivors: list[str] = []
    for number, mutant in enumerate(chosen, 1):
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="billing-mutant-") as scratch:
            tree = Path(scratch)
            _scratch_copy(tree, committed=args.committed)
            _apply(tree, mutant)
            caught = _suite_fails(tree, server)
        verdict = "caught" if caught else "SURVIVED"
        print(
            f"[{number:2}/{len(chosen)}] {verdict:8} {mutant.name} ({time.perf_counter() - started:.0f} s)", flush=True
        )
        if not caught:
            survivors.append(mutant.name)
    print(f"{len(chosen) - len(survivors)} of {len(chosen)} mutants caught")
    if survivors:
        print("survived: " + ", ".join(survivors))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
