"""REST API: routes, authorizer, request validation, stage logging and throttling, WAF body limits."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from billing import resource_names as names
from billing.local.api_gateway import AUTHORIZER_CACHE_SECONDS
from billing.resource_names import FunctionName, Route
from infra.api import AUTHORIZATION_HEADER_PATTERN, AUTHORIZER_CACHE_TTL, waf_number_greater_than, waf_path_pattern
from tests.infrastructure import cfn
from tests.infrastructure.conftest import Synthesized

pytestmark = pytest.mark.infrastructure


def _methods(synth: Synthesized) -> dict[tuple[str, str], dict[str, Any]]:
    """(HTTP method, full path) -> method properties, for every method the API serves."""
    service = synth.raw["service"]
    return {
        (method["Properties"]["HttpMethod"], cfn.api_path(service, method["Properties"]["ResourceId"]["Ref"])): method[
            "Properties"
        ]
        for method in cfn.of_type(service, "AWS::ApiGateway::Method").values()
    }


def _route_id(route: Route) -> str:
    return f"{route.method} {route.path}"


def test_api_serves_exactly_the_routes_in_resource_names(dev: Synthesized) -> None:
    assert set(_methods(dev)) == {(route.method, route.path) for route in names.ROUTES}


@pytest.mark.parametrize("route", names.ROUTES, ids=_route_id)
def test_route_proxies_to_its_function(route: Route, dev: Synthesized) -> None:
    integration = _methods(dev)[(route.method, route.path)]["Integration"]
    assert integration["Type"] == "AWS_PROXY"
    assert cfn.function_id(dev.raw["service"], route.function) in cfn.references(integration["Uri"])


@pytest.mark.parametrize("route", names.ROUTES, ids=_route_id)
def test_billing_routes_need_the_token_authorizer_and_webhooks_do_not(route: Route, dev: Synthesized) -> None:
    method = _methods(dev)[(route.method, route.path)]
    (authorizer_id,) = cfn.of_type(dev.raw["service"], "AWS::ApiGateway::Authorizer")
    if route.authorized:
        assert method["AuthorizationType"] == "CUSTOM"
        assert method["AuthorizerId"] == {"Ref": authorizer_id}
    else:
        # Providers (signed webhooks) and the customer's browser during 3-D Secure hold no token of ours.
        assert route.function in (FunctionName.WEBHOOK, FunctionName.THREE_DS)
        assert method["AuthorizationType"] == "NONE"
        assert "AuthorizerId" not in method


@pytest.mark.parametrize("route", names.ROUTES, ids=_route_id)
def test_route_path_parameters_are_required_and_validated(route: Route, dev: Synthesized) -> None:
    method = _methods(dev)[(route.method, route.path)]
    expected = {
        f"method.request.path.{part.strip('{}')}": True for part in route.path.split("/") if part.startswith("{")
    }
    assert method["RequestParameters"] == expected
    (validator_id, validator), *_ = cfn.of_type(dev.raw["service"], "AWS::ApiGateway::RequestValidator").items()
    assert method["RequestValidatorId"] == {"Ref": validator_id}
    assert validator["Properties"]["ValidateRequestParameters"] is True


def test_authorizer_checks_bearer_header_shape_and_caches_decisions(dev: Synthesized) -> None:
    ((_, authorizer),) = cfn.of_type(dev.raw["service"], "AWS::ApiGateway::Authorizer").items()
    props = authorizer["Properties"]
    assert props["Type"] == "TOKEN"
    assert props["IdentitySource"] == "method.request.header.Authorization"
    assert props["IdentityValidationExpression"] == AUTHORIZATION_HEADER_PATTERN
    assert props["AuthorizerResultTtlInSeconds"] == AUTHORIZER_CACHE_TTL.to_seconds()
    assert cfn.function_id(dev.raw["service"], FunctionName.AUTHORIZER) in cfn.references(props["AuthorizerUri"])


def test_local_gateway_caches_authorizer_decisions_as_long_as_the_deployed_api() -> None:
    assert AUTHORIZER_CACHE_TTL.to_seconds() == AUTHORIZER_CACHE_SECONDS


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_api_stage_logs_access_traces_and_throttles_per_stage_config(
    stage: str, request: pytest.FixtureRequest
) -> None:
    synth: Synthesized = request.getfixturevalue(stage)
    config = synth.built.config
    ((_, api_stage),) = cfn.of_type(synth.raw["service"], "AWS::ApiGateway::Stage").items()
    props = api_stage["Properties"]
    assert props["StageName"] == config.name
    assert props["TracingEnabled"] is True
    assert props["Variables"]["stage"] == config.name
    access_log_group = cfn.references(props["AccessLogSetting"]["DestinationArn"]) & set(
        cfn.of_type(synth.raw["service"], "AWS::Logs::LogGroup")
    )
    assert len(access_log_group) == 1
    assert "$context.requestId" in props["AccessLogSetting"]["Format"]
    (settings,) = props["MethodSettings"]
    assert (settings["HttpMethod"], settings["ResourcePath"]) == ("*", "/*")
    assert settings["ThrottlingRateLimit"] == config.api_throttle_rate_limit
    assert settings["ThrottlingBurstLimit"] == config.api_throttle_burst_limit
    assert settings["LoggingLevel"] in {"INFO", "ERROR"}
    # Request bodies hold payment data: full request/response logging stays off.
    assert settings["DataTraceEnabled"] is False


def _web_acl(synth: Synthesized) -> tuple[str, dict[str, Any]]:
    ((acl_id, acl),) = cfn.of_type(synth.raw["service"], "AWS::WAFv2::WebACL").items()
    return acl_id, acl["Properties"]


def _rules(synth: Synthesized) -> dict[str, dict[str, Any]]:
    return {rule["Name"]: rule for rule in _web_acl(synth)[1]["Rules"]}


def _refusal(synth: Synthesized, rule: dict[str, Any]) -> dict[str, Any]:
    """The 413 problem document a rule answers with."""
    response = rule["Action"]["Block"]["CustomResponse"]
    assert response["ResponseCode"] == 413
    bodies = _web_acl(synth)[1]["CustomResponseBodies"]
    document: dict[str, Any] = json.loads(bodies[response["CustomResponseBodyKey"]]["Content"])
    return document


def _webhook_path() -> str:
    (webhook,) = (route for route in names.ROUTES if route.function is FunctionName.WEBHOOK)
    return webhook.path


def test_waf_is_regional_on_the_stage_with_one_size_rule_per_limit(dev: Synthesized) -> None:
    acl_id, props = _web_acl(dev)

    assert props["Scope"] == "REGIONAL"
    assert set(_rules(dev)) == {"request-body-size-limit", f"request-body-size-limit-{names.MAX_WEBHOOK_BODY_BYTES}"}
    assert len({rule["Priority"] for rule in props["Rules"]}) == len(props["Rules"])
    # The inspection limit included in WAF's price; the rules are written for it.
    assert props["AssociationConfig"]["RequestBody"]["API_GATEWAY"]["DefaultSizeInspectionLimit"] == "KB_16"
    ((_, association),) = cfn.of_type(dev.raw["service"], "AWS::WAFv2::WebACLAssociation").items()
    assert acl_id in cfn.references(association["Properties"]["WebACLArn"])
    (stage_id,) = cfn.of_type(dev.raw["service"], "AWS::ApiGateway::Stage")
    assert stage_id in cfn.references(association["Properties"]["ResourceArn"])


def test_waf_answers_413_to_bodies_over_16_kib_except_on_the_webhook_path(dev: Synthesized) -> None:
    rule = _rules(dev)["request-body-size-limit"]
    body_over, not_webhook = rule["Statement"]["AndStatement"]["Statements"]

    size = body_over["SizeConstraintStatement"]
    assert (size["ComparisonOperator"], size["Size"]) == ("GT", names.MAX_REQUEST_BODY_BYTES)
    assert names.MAX_REQUEST_BODY_BYTES == 16 * 1024
    # Bodies beyond what WAF inspects count as too large instead of slipping through.
    assert size["FieldToMatch"]["Body"]["OversizeHandling"] == "MATCH"
    exempt = not_webhook["NotStatement"]["Statement"]["RegexMatchStatement"]
    assert exempt["FieldToMatch"] == {"UriPath": {}}
    assert exempt["RegexString"] == waf_path_pattern([_webhook_path()])
    document = _refusal(dev, rule)
    assert document["code"] == "payload_too_large"
    assert str(names.MAX_REQUEST_BODY_BYTES) in document["detail"]


def test_waf_answers_413_to_webhooks_declaring_more_than_1_mib(dev: Synthesized) -> None:
    rule = _rules(dev)[f"request-body-size-limit-{names.MAX_WEBHOOK_BODY_BYTES}"]
    on_webhook, declared = (s["RegexMatchStatement"] for s in rule["Statement"]["AndStatement"]["Statements"])

    assert on_webhook["FieldToMatch"] == {"UriPath": {}}
    assert on_webhook["RegexString"] == waf_path_pattern([_webhook_path()])
    # WAF cannot measure a body past 16 KB: the rule reads the length the request declares.
    assert declared["FieldToMatch"] == {"SingleHeader": {"Name": "content-length"}}
    assert declared["RegexString"] == waf_number_greater_than(names.MAX_WEBHOOK_BODY_BYTES)
    assert not any("Body" in json.dumps(s["FieldToMatch"]) for s in (on_webhook, declared))
    document = _refusal(dev, rule)
    assert document["code"] == "payload_too_large"
    assert str(names.MAX_WEBHOOK_BODY_BYTES) in document["detail"]


@pytest.mark.parametrize(
    ("path", "webhook"),
    [
        ("/dev/api/v1/billing/webhook/stripe", True),  # execute-api endpoint: the stage comes first
        ("/api/v1/billing/webhook/gocardless", True),  # custom domain with an empty base path
        ("/dev/api/v1/billing/webhook/sandbox/", True),
        ("/dev/api/v1/billing/executions", False),
        ("/dev/api/v1/billing/executions/e-1/cancel", False),
        ("/dev/api/v1/billing/webhook/", False),
        ("/dev/api/v1/billing/webhook/stripe/extra", False),
        ("/dev/api/v1/billing/webhook/../executions", False),
        ("/dev/api/v1/billing/webhook/..%2Fexecutions", False),
        ("/dev/api/v1/billing/webhook/..", False),
        ("/dev/x/api/v1/billing/webhook/stripe", False),
        ("/dev/api/v1/billing/webhooks/stripe", False),
        ("/dev/api/v1/billing/executions/webhook/stripe", False),
    ],
)
def test_waf_webhook_path_pattern_matches_only_paths_routed_to_the_webhook(path: str, webhook: bool) -> None:
    assert bool(re.search(waf_path_pattern([_webhook_path()]), path)) is webhook


@pytest.mark.parametrize("limit", [9, 10, 99, 1000, 16 * 1024, names.MAX_WEBHOOK_BODY_BYTES, 10 * 1024 * 1024])
def test_waf_number_pattern_matches_exactly_the_numbers_over_the_limit(limit: int) -> None:
    pattern = re.compile(waf_number_greater_than(limit))
    numbers = {*range(max(0, limit - 1200), limit + 1200), 0, 1, limit * 10, limit * 10 - 1, 10**12}

    for number in sorted(numbers):
        assert bool(pattern.search(str(number))) is (number > limit), number
        assert bool(pattern.search(f"00{number}")) is (number > limit), f"00{number}"
    for text in ("", "abc", "-5", f"{limit + 1} ", f"1e{len(str(limit)) + 2}"):
        assert not pattern.search(text), text


def test_api_output_points_at_the_billing_base_path(dev: Synthesized) -> None:
    outputs = dev.raw["service"]["Outputs"]
    assert names.API_BASE_PATH in str(outputs["ApiUrl"]["Value"])


def test_gateway_refusals_are_problem_json_and_unknown_routes_404(dev: Synthesized) -> None:
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in cfn.of_type(dev.raw["service"], "AWS::ApiGateway::GatewayResponse").values()
    }
    assert responses["MISSING_AUTHENTICATION_TOKEN"]["StatusCode"] == "404"
    assert responses["UNAUTHORIZED"]["StatusCode"] == "401"
    for response in responses.values():
        assert response["ResponseParameters"]["gatewayresponse.header.Content-Type"] == "'application/problem+json'"
        body = json.loads(response["ResponseTemplates"]["application/json"])
        assert body["code"]
        assert body["correlation_id"] == "$context.requestId"
