"""REST API: routes, authorizer, request validation, stage logging and throttling, WAF body limit."""

from __future__ import annotations

import json
from typing import Any

import pytest

from billing import resource_names as names
from billing.resource_names import FunctionName, Route
from infra.api import AUTHORIZATION_HEADER_PATTERN, AUTHORIZER_CACHE_TTL
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
        assert route.function is FunctionName.WEBHOOK
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


def test_waf_answers_413_to_bodies_over_the_shared_limit(dev: Synthesized) -> None:
    ((acl_id, acl),) = cfn.of_type(dev.raw["service"], "AWS::WAFv2::WebACL").items()
    props = acl["Properties"]
    assert props["Scope"] == "REGIONAL"
    (rule,) = props["Rules"]
    size = rule["Statement"]["SizeConstraintStatement"]
    assert size["Size"] == names.MAX_REQUEST_BODY_BYTES
    assert size["ComparisonOperator"] == "GT"
    # Bodies beyond what WAF inspects count as too large instead of slipping through.
    assert size["FieldToMatch"]["Body"]["OversizeHandling"] == "MATCH"
    assert rule["Action"]["Block"]["CustomResponse"]["ResponseCode"] == 413
    body_key = rule["Action"]["Block"]["CustomResponse"]["CustomResponseBodyKey"]
    assert json.loads(props["CustomResponseBodies"][body_key]["Content"])["code"] == "payload_too_large"
    ((_, association),) = cfn.of_type(dev.raw["service"], "AWS::WAFv2::WebACLAssociation").items()
    assert acl_id in cfn.references(association["Properties"]["WebACLArn"])
    (stage_id,) = cfn.of_type(dev.raw["service"], "AWS::ApiGateway::Stage")
    assert stage_id in cfn.references(association["Properties"]["ResourceArn"])


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
