"""The REST API: routes from billing.resource_names.ROUTES, bearer-token authorizer, WAF body-size limits, logging."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from http import HTTPStatus

from aws_cdk import Duration
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from billing import resource_names as names
from billing.api.problems import PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_BASE
from infra.config import StageConfig
from infra.nag import acknowledge

# Decisions are cached per token for this long across all routes (see functions/authorizer/README.md).
AUTHORIZER_CACHE_TTL = Duration.minutes(5)
# API Gateway rejects a malformed header itself, without invoking (and paying for) the authorizer.
AUTHORIZATION_HEADER_PATTERN = r"^Bearer [-0-9A-Za-z_.~+/]+=*$"


# API Gateway's own refusals in the problem shape with the codes the local stack uses; an unknown route is a
# 404, not API Gateway's default 403 "Missing Authentication Token".
GATEWAY_PROBLEMS = (
    (apigateway.ResponseType.MISSING_AUTHENTICATION_TOKEN, 404, "route_not_found", "no such route"),
    (apigateway.ResponseType.UNAUTHORIZED, 401, "unauthenticated", "a valid bearer token is required"),
    (apigateway.ResponseType.ACCESS_DENIED, 403, "forbidden", "the token does not allow this request"),
    (apigateway.ResponseType.THROTTLED, 429, "throttled", "too many requests; retry with backoff"),
)

# WAF forwards at most this much of a body to its rules (the web ACL's AssociationConfig, API_GATEWAY: KB_16,
# the default included in WAF's price); a larger body cannot be measured, only flagged by oversize handling.
WAF_BODY_INSPECTION_LIMIT = "KB_16"
WAF_BODY_INSPECTION_BYTES = 16 * 1024
# A path parameter's value in WAF's patterns: no slash, dot or percent sign, so no encoded or dot segment can make a
# path look like a webhook path to WAF while API Gateway routes it elsewhere.
_SEGMENT_PATTERN = "[A-Za-z0-9_-]+"


def waf_path_pattern(templates: Iterable[str]) -> str:
    """A regex (in WAF's PCRE subset) matching the URI paths that API Gateway routes to one of the templates.

    WAF sees the request's path as sent: on the execute-api endpoint it starts with the stage (/dev/api/...), behind
    a custom domain with the base path mapping's segment or nothing, so one optional leading segment is allowed.
    Whatever that segment holds, a path that matches reaches one of these routes or none at all.
    """
    alternatives = [
        "/".join(_SEGMENT_PATTERN if part.startswith("{") else re.escape(part) for part in template.split("/"))
        for template in templates
    ]
    return f"^(?:/[^/]+)?(?:{'|'.join(alternatives)})/?$"


def waf_number_greater_than(limit: int) -> str:
    """A regex matching the decimal numbers (leading zeros allowed) greater than `limit`: WAF compares header
    values as text, so "Content-Length over N" has to be spelt digit by digit."""
    digits = str(limit)
    alternatives = [f"[1-9][0-9]{{{len(digits)},}}"]  # more digits than the limit has
    for position, digit in enumerate(digits):
        if digit == "9":
            continue  # no digit is greater than 9 in this position
        greater = "9" if digit == "8" else f"[{int(digit) + 1}-9]"
        rest = len(digits) - position - 1
        tail = "" if rest == 0 else "[0-9]" if rest == 1 else f"[0-9]{{{rest}}}"
        alternatives.append(digits[:position] + greater + tail)
    return f"^0*(?:{'|'.join(alternatives)})$"


def _path_parameters(path: str) -> dict[str, bool]:
    """Required path parameters of a route, in API Gateway's request-parameter notation."""
    return {
        f"method.request.path.{part[1:-1]}": True
        for part in path.split("/")
        if part.startswith("{") and part.endswith("}")
    }


class BillingApi(Construct):
    """REST API with one Lambda proxy integration per route and the authorizer on every non-webhook route."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        handlers: Mapping[names.FunctionName, lambda_.IFunction],
        authorizer_function: lambda_.IFunction,
    ) -> None:
        super().__init__(scope, construct_id)
        access_logs = logs.LogGroup(
            self, "AccessLogs", retention=config.log_group_retention, removal_policy=config.removal_policy
        )
        self.rest_api = apigateway.RestApi(
            self,
            "RestApi",
            rest_api_name=f"{names.APP_NAME}-{config.name}",
            description="Billing execution engine API",
            endpoint_types=[apigateway.EndpointType.REGIONAL],
            # Execution and access logging need the account-level CloudWatch role; this stack provides it.
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=config.removal_policy,
            deploy_options=apigateway.StageOptions(
                stage_name=config.name,
                access_log_destination=apigateway.LogGroupLogDestination(access_logs),
                access_log_format=apigateway.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
                logging_level=apigateway.MethodLoggingLevel.INFO
                if config.log_level in ("DEBUG", "INFO")
                else apigateway.MethodLoggingLevel.ERROR,
                # Full request and response logging would copy payment data into the logs.
                data_trace_enabled=False,
                metrics_enabled=True,
                tracing_enabled=True,
                throttling_rate_limit=config.api_throttle_rate_limit,
                throttling_burst_limit=config.api_throttle_burst_limit,
                variables={"stage": config.name, "basePath": names.API_BASE_PATH},
            ),
        )
        self.authorizer = apigateway.TokenAuthorizer(
            self,
            "BearerTokenAuthorizer",
            handler=authorizer_function,
            identity_source=apigateway.IdentitySource.header("Authorization"),
            validation_regex=AUTHORIZATION_HEADER_PATTERN,
            results_cache_ttl=AUTHORIZER_CACHE_TTL,
        )
        validator = self.rest_api.add_request_validator(
            "PathParameterValidator", validate_request_parameters=True, validate_request_body=False
        )
        acknowledge(
            self.rest_api,
            "APIG2",
            "API Gateway validates the required path parameters; bodies are validated by the functions' pydantic "
            "models, the one schema of each request, after WAF has capped their size. A copy as API Gateway models "
            "would drift.",
        )
        acknowledge(
            self.rest_api,
            "IAM4",
            "API Gateway's account-level CloudWatch role must carry AmazonAPIGatewayPushToCloudWatchLogs, the policy "
            "AWS documents for API Gateway to write execution and access logs.",
            findings=(
                "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs",
            ),
        )
        integrations: dict[names.FunctionName, apigateway.LambdaIntegration] = {}
        for route in names.ROUTES:
            integration = integrations.setdefault(
                route.function, apigateway.LambdaIntegration(handlers[route.function], allow_test_invoke=False)
            )
            method = self.rest_api.root.resource_for_path(route.path).add_method(
                route.method,
                integration,
                authorizer=self.authorizer if route.authorized else None,
                authorization_type=apigateway.AuthorizationType.CUSTOM
                if route.authorized
                else apigateway.AuthorizationType.NONE,
                request_validator=validator,
                request_parameters=_path_parameters(route.path),
            )
            if not route.authorized:
                acknowledge(
                    method,
                    "APIG4",
                    "Payment providers cannot present our bearer token: the webhook function authenticates each "
                    "request by the provider's HMAC signature before acting on it.",
                )
                acknowledge(
                    method,
                    "COG4",
                    "Webhook route: authenticated by the provider's signature in the function, not by a user pool.",
                )
            else:
                acknowledge(
                    method,
                    "COG4",
                    "Authorized by the Lambda token authorizer, which verifies the same JWTs the local stack issues; "
                    "a Cognito user pool would be a second identity system.",
                )
        self.web_acl = self._web_acl(config)
        self._problem_responses()

    def _problem_responses(self) -> None:
        """Answers API Gateway gives itself, as problem+json like the functions' (and the local stack's)."""
        for response_type, status, code, detail in GATEWAY_PROBLEMS:
            body = {
                "type": f"{PROBLEM_TYPE_BASE}{code}",
                "title": HTTPStatus(status).phrase,
                "status": status,
                "code": code,
                "detail": detail,
                "correlation_id": "$context.requestId",
            }
            self.rest_api.add_gateway_response(
                f"Problem{status}{code.title().replace('_', '')}",
                type=response_type,
                status_code=str(status),
                response_headers={"Content-Type": f"'{PROBLEM_CONTENT_TYPE}'"},
                templates={"application/json": json.dumps(body)},
            )

    def _web_acl(self, config: StageConfig) -> wafv2.CfnWebACL:
        """WAF on the stage: per-route body limits from ROUTES, answered with 413 before any function runs.

        Rule 0 refuses bodies over MAX_REQUEST_BODY_BYTES on every path except those of routes allowed more (the
        webhook route), counting a body WAF cannot inspect whole as too large. WAF inspects at most 16 KB of a
        body, so it cannot measure a larger limit; one rule per larger limit refuses the requests to its paths that
        declare a longer Content-Length instead. A body sent without Content-Length (chunked) is bounded there
        only by API Gateway's 10 MB. docs/infrastructure.md, "Request size limits", has the reasoning.
        """
        default_limit = names.MAX_REQUEST_BODY_BYTES
        if default_limit > WAF_BODY_INSPECTION_BYTES:
            raise ValueError("MAX_REQUEST_BODY_BYTES is over what WAF inspects: the default rule could not measure it")
        if any(route.max_body_bytes < default_limit for route in names.ROUTES):
            raise ValueError("a route limit below MAX_REQUEST_BODY_BYTES needs a WAF rule of its own")
        larger: dict[int, list[str]] = {}
        for route in names.ROUTES:
            if route.max_body_bytes > default_limit:
                larger.setdefault(route.max_body_bytes, []).append(route.path)

        def visibility(metric: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
            return wafv2.CfnWebACL.VisibilityConfigProperty(
                cloud_watch_metrics_enabled=True, metric_name=metric, sampled_requests_enabled=True
            )

        def too_large(limit: int) -> wafv2.CfnWebACL.CustomResponseBodyProperty:
            # WAF offers application/json, not application/problem+json; the body has the problem shape and the
            # detail the local gateway gives.
            return wafv2.CfnWebACL.CustomResponseBodyProperty(
                content_type="APPLICATION_JSON",
                content=json.dumps(
                    {
                        "type": f"{PROBLEM_TYPE_BASE}payload_too_large",
                        "title": HTTPStatus(413).phrase,
                        "status": 413,
                        "code": "payload_too_large",
                        "detail": f"request bodies are limited to {limit} bytes on this path",
                    }
                ),
            )

        def block_413(body_key: str) -> wafv2.CfnWebACL.RuleActionProperty:
            return wafv2.CfnWebACL.RuleActionProperty(
                block=wafv2.CfnWebACL.BlockActionProperty(
                    custom_response=wafv2.CfnWebACL.CustomResponseProperty(
                        response_code=413, custom_response_body_key=body_key
                    )
                )
            )

        def regex(pattern: str, field: wafv2.CfnWebACL.FieldToMatchProperty) -> wafv2.CfnWebACL.StatementProperty:
            return wafv2.CfnWebACL.StatementProperty(
                regex_match_statement=wafv2.CfnWebACL.RegexMatchStatementProperty(
                    field_to_match=field,
                    regex_string=pattern,
                    text_transformations=[wafv2.CfnWebACL.TextTransformationProperty(priority=0, type="NONE")],
                )
            )

        def on_paths(templates: Iterable[str]) -> wafv2.CfnWebACL.StatementProperty:
            return regex(waf_path_pattern(templates), wafv2.CfnWebACL.FieldToMatchProperty(uri_path={}))

        body_over_default = wafv2.CfnWebACL.StatementProperty(
            size_constraint_statement=wafv2.CfnWebACL.SizeConstraintStatementProperty(
                # A body beyond what WAF inspects is over the default limit too: it counts as a match.
                field_to_match=wafv2.CfnWebACL.FieldToMatchProperty(
                    body=wafv2.CfnWebACL.BodyProperty(oversize_handling="MATCH")
                ),
                comparison_operator="GT",
                size=default_limit,
                text_transformations=[wafv2.CfnWebACL.TextTransformationProperty(priority=0, type="NONE")],
            )
        )
        larger_paths = [path for paths in larger.values() for path in paths]
        default_statement = (
            wafv2.CfnWebACL.StatementProperty(
                and_statement=wafv2.CfnWebACL.AndStatementProperty(
                    statements=[
                        body_over_default,
                        wafv2.CfnWebACL.StatementProperty(
                            not_statement=wafv2.CfnWebACL.NotStatementProperty(statement=on_paths(larger_paths))
                        ),
                    ]
                )
            )
            if larger_paths
            else body_over_default
        )
        rules = [
            wafv2.CfnWebACL.RuleProperty(
                name="request-body-size-limit",
                priority=0,
                action=block_413("payload-too-large"),
                statement=default_statement,
                visibility_config=visibility("request-body-size-limit"),
            )
        ]
        bodies = {"payload-too-large": too_large(default_limit)}
        for priority, (limit, paths) in enumerate(sorted(larger.items()), start=1):
            name = f"request-body-size-limit-{limit}"
            bodies[f"payload-too-large-{limit}"] = too_large(limit)
            declared_over_limit = regex(
                waf_number_greater_than(limit),
                # single_header is untyped in the CDK: the CloudFormation shape is written out. WAF matches header
                # names case-insensitively.
                wafv2.CfnWebACL.FieldToMatchProperty(single_header={"Name": "content-length"}),
            )
            rules.append(
                wafv2.CfnWebACL.RuleProperty(
                    name=name,
                    priority=priority,
                    action=block_413(f"payload-too-large-{limit}"),
                    statement=wafv2.CfnWebACL.StatementProperty(
                        and_statement=wafv2.CfnWebACL.AndStatementProperty(
                            statements=[on_paths(paths), declared_over_limit]
                        )
                    ),
                    visibility_config=visibility(name),
                )
            )

        web_acl = wafv2.CfnWebACL(
            self,
            "WebAcl",
            name=f"{names.APP_NAME}-{config.name}-api",
            scope="REGIONAL",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            custom_response_bodies=bodies,
            visibility_config=visibility(f"{names.APP_NAME}-{config.name}-api"),
            # 16 KB is the inspection limit included in WAF's price; oversize bodies count as a match in rule 0.
            association_config=wafv2.CfnWebACL.AssociationConfigProperty(
                request_body={
                    "API_GATEWAY": wafv2.CfnWebACL.RequestBodyAssociatedResourceTypeConfigProperty(
                        default_size_inspection_limit=WAF_BODY_INSPECTION_LIMIT
                    )
                }
            ),
            rules=rules,
        )
        wafv2.CfnWebACLAssociation(
            self,
            "WebAclAssociation",
            resource_arn=self.rest_api.deployment_stage.stage_arn,
            web_acl_arn=web_acl.attr_arn,
        )
        return web_acl
