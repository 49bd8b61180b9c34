"""The audit trail end to end on the local stack: a charge leaves audit evidence, the checkpoint function signs the
tree into the Object Lock bucket, an auditor's token reads events and proves inclusion over HTTP, and a token
without the auditor scope (or no token) is refused."""

from __future__ import annotations

import base64
from uuid import uuid4

import pytest

from billing import resource_names as names
from billing.audit import merkle
from billing.audit.s3 import checkpoint_key
from billing.auth.tokens import LOCAL_TOKEN_SETTINGS, issue_token
from billing.resource_names import FunctionName
from tests.e2e.conftest import LocalApi

AUDIT = f"{names.API_BASE_PATH}/audit"
pytestmark = pytest.mark.e2e


def _auditor(local_stack: LocalApi) -> str:
    return issue_token(LOCAL_TOKEN_SETTINGS, uuid4(), "auditor-e2e", scopes=["auditor"])


def test_an_auditor_reads_events_and_proves_one_against_a_locked_checkpoint(local_stack: LocalApi) -> None:
    # A rejected webhook signature is today's simplest audited event that any caller can cause.
    provider_event = f"evt_{uuid4().hex}"
    rejected = local_stack.request(
        "POST",
        f"{names.API_BASE_PATH}/webhook/sandbox",
        body=b'{"id": "' + provider_event.encode() + b'"}',
        headers={"Content-Type": "application/json", "X-Sandbox-Signature": "t=1,v1=00"},
    )
    assert rejected.status == 401, rejected.text
    run = local_stack.stack.invoke(FunctionName.AUDIT_CHECKPOINT, {})
    size = run["tree_size"]
    assert size >= 1
    token = _auditor(local_stack)

    events = local_stack.request(
        "GET", f"{AUDIT}/events?event_type=auth.webhook_signature_rejected&limit=500", token=token
    )
    assert events.status == 200, events.text
    item = events.json()["items"][-1]
    assert item["resource_id"] == "sandbox"
    assert item["seq"] is not None

    latest = local_stack.request("GET", f"{AUDIT}/checkpoints/latest", token=token)
    assert latest.status == 200, latest.text
    checkpoint = latest.json()
    assert checkpoint["tree_size"] >= item["seq"] + 1
    proof = local_stack.request("GET", f"{AUDIT}/proofs/{item['seq']}?tree_size={checkpoint['tree_size']}", token=token)
    assert proof.status == 200, proof.text
    document = proof.json()
    merkle.verify_inclusion(
        item["seq"],
        checkpoint["tree_size"],
        merkle.leaf_hash(base64.b64decode(document["entry"]["leaf"])),
        [base64.b64decode(h) for h in document["proof"]],
        base64.b64decode(checkpoint["root_hash"]),
    )
    s3 = local_stack.stack.client("s3")
    head = s3.head_object(
        Bucket=local_stack.stack.resources.audit_checkpoints_bucket, Key=checkpoint_key(checkpoint["tree_size"])
    )
    assert head["ObjectLockMode"] == "COMPLIANCE"


@pytest.mark.parametrize("path", ["events", "checkpoints/latest", "proofs/0?tree_size=1"])
def test_a_token_without_the_auditor_scope_gets_403_problem(local_stack: LocalApi, path: str) -> None:
    response = local_stack.request("GET", f"{AUDIT}/{path}", token=local_stack.token())
    assert response.status == 403, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "insufficient_scope"


def test_no_token_is_401(local_stack: LocalApi) -> None:
    assert local_stack.request("GET", f"{AUDIT}/events").status == 401


def test_bad_proof_requests_are_problems(local_stack: LocalApi) -> None:
    token = _auditor(local_stack)
    missing = local_stack.request("GET", f"{AUDIT}/proofs/0?tree_size=987654321", token=token)
    assert missing.status == 404, missing.text
    assert missing.json()["code"] == "audit_record_not_found"
    invalid = local_stack.request("GET", f"{AUDIT}/proofs/x?tree_size=1", token=token)
    assert invalid.status == 422, invalid.text
