"""Read synthesized CloudFormation JSON: find a function, its role's statements, an API method's full path."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from billing import resource_names as names
from billing.resource_names import FunctionName

Template = dict[str, Any]


def of_type(template: Template, resource_type: str) -> dict[str, dict[str, Any]]:
    """logical id -> resource for one CloudFormation type."""
    return {k: r for k, r in template["Resources"].items() if r["Type"] == resource_type}


def function_id(template: Template, function: FunctionName) -> str:
    """Logical id of the Lambda function whose Powertools service name is the function's."""
    wanted = names.service_name(function)
    matches = [
        logical_id
        for logical_id, resource in of_type(template, "AWS::Lambda::Function").items()
        if resource["Properties"].get("Environment", {}).get("Variables", {}).get(names.ENV_POWERTOOLS_SERVICE_NAME)
        == wanted
    ]
    assert len(matches) == 1, f"expected one function for {wanted}, found {matches}"
    return matches[0]


def function_props(template: Template, function: FunctionName) -> dict[str, Any]:
    props: dict[str, Any] = template["Resources"][function_id(template, function)]["Properties"]
    return props


def role_statements(template: Template, function: FunctionName) -> list[dict[str, Any]]:
    """Every Allow/Deny statement attached to the function's execution role (inline and AWS::IAM::Policy)."""
    role = function_props(template, function)["Role"]["Fn::GetAtt"][0]
    role_props = template["Resources"][role]["Properties"]
    assert not role_props.get("ManagedPolicyArns"), f"{function}: AWS managed policies on its role"
    statements = [s for p in role_props.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
    for policy in of_type(template, "AWS::IAM::Policy").values():
        if {"Ref": role} in policy["Properties"]["Roles"]:
            statements.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return statements


def _listify(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def grants(template: Template, function: FunctionName) -> Iterator[tuple[str, Any]]:
    """(action, resource) pairs the function's role allows."""
    for statement in role_statements(template, function):
        assert statement["Effect"] == "Allow"
        for action in _listify(statement["Action"]):
            for resource in _listify(statement["Resource"]):
                yield action, resource


def actions(template: Template, function: FunctionName) -> set[str]:
    return {action for action, _ in grants(template, function)}


def references(value: Any) -> set[str]:
    """Every logical id or import name a CloudFormation value mentions (Ref, GetAtt, ImportValue)."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str):
                found.add(inner)
            elif key == "Fn::GetAtt":
                found.add(inner[0] if isinstance(inner, list) else inner.split(".")[0])
            elif key == "Fn::ImportValue" and isinstance(inner, str):
                found.add(inner)
            else:
                found |= references(inner)
    elif isinstance(value, list):
        for inner in value:
            found |= references(inner)
    return found


def api_path(template: Template, resource_id: str) -> str:
    """The full path of an AWS::ApiGateway::Resource, walked up through its parents."""
    parts: list[str] = []
    current: Any = {"Ref": resource_id}
    while isinstance(current, dict) and "Ref" in current:
        resource = template["Resources"][current["Ref"]]
        parts.append(resource["Properties"]["PathPart"])
        current = resource["Properties"]["ParentId"]
    return "/" + "/".join(reversed(parts))


def imported_logical_id(producer: Template, value: Any) -> str:
    """The producer stack's logical id behind a consumer's Fn::ImportValue (a CDK export names one resource)."""
    name = value["Fn::ImportValue"]
    for output in producer.get("Outputs", {}).values():
        if output.get("Export", {}).get("Name") == name:
            (logical_id,) = references(output["Value"])
            return logical_id
    raise AssertionError(f"{name} is not exported by the producer stack")


def key_with_alias(template: Template, alias: str) -> str:
    """Logical id of the KMS key an AWS::KMS::Alias of that name points at."""
    (key_id,) = (
        references(resource["Properties"]["TargetKeyId"]).pop()
        for resource in of_type(template, "AWS::KMS::Alias").values()
        if resource["Properties"]["AliasName"] == alias
    )
    return key_id


def rendered(value: Any) -> str:
    """A string-valued CloudFormation expression as text, references as <name>: Fn::Join of literals and Refs."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return f"<{value['Ref']}>"
    if isinstance(value, dict) and set(value) == {"Fn::Join"}:
        separator, parts = value["Fn::Join"]
        return str(separator).join(rendered(part) for part in parts)
    raise AssertionError(f"not a plain string expression: {value!r}")
