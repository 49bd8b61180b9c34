"""The execute function in a fresh container as Lambda runs it (tracing on): a sandbox card payment is traced and
counted in metrics, though none of the tracing machinery is loaded where tracing is off."""

from __future__ import annotations

import json
from uuid import uuid4

import pytest

from billing.resource_names import METRICS_NAMESPACE, FunctionName, service_name
from tests.factories import CARD_REQUEST
from tests.fresh_interpreter import emf_metrics, lambda_handler_subsegment, run_handler
from tests.lambda_harness import EXECUTIONS_PATH, api_event

pytestmark = pytest.mark.integration


def test_a_payment_in_a_fresh_lambda_container_is_traced_and_counted(db_url: str) -> None:
    event = api_event("POST", EXECUTIONS_PATH, tenant_id=uuid4(), body=CARD_REQUEST, headers={"Idempotency-Key": "k"})

    report, output = run_handler("execute", env={"DATABASE_URL": db_url}, event=event, in_lambda=True)

    assert report["error"] is None
    assert {"botocore", "psycopg"} <= set(report["patched"])
    handler = lambda_handler_subsegment(report["segments"])
    assert handler["annotations"] == {"ColdStart": True, "Service": service_name(FunctionName.EXECUTE)}
    response = json.loads(handler["metadata"][service_name(FunctionName.EXECUTE)]["lambda_handler response"]["body"])
    assert response["status"] == "completed"

    metrics = emf_metrics(output)
    assert {"Execution_completed", "RailCallDuration", "RailOutcome_succeeded"} <= set(metrics)
    document = metrics["Execution_completed"]
    assert document["_aws"]["CloudWatchMetrics"][0]["Namespace"] == METRICS_NAMESPACE
    assert document["service"] == service_name(FunctionName.EXECUTE)
