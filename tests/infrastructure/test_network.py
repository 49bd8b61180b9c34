"""Network stack: subnets, VPC endpoints and the functions' security group."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk.assertions import Annotations, Match, Template

from infra.stacks.network import FUNCTION_SUBNETS, MAX_AZS, PUBLIC_SUBNETS, NetworkStack
from tests.infrastructure import cfn
from tests.infrastructure.conftest import Synthesized

pytestmark = pytest.mark.infrastructure


def _endpoint_services(template: cfn.Template) -> dict[str, str]:
    """Service suffix (secretsmanager, sqs, events, kms, s3) -> endpoint type."""
    return {
        endpoint["Properties"]["ServiceName"]["Fn::Join"][1][-1].lstrip("."): endpoint["Properties"]["VpcEndpointType"]
        for endpoint in cfn.of_type(template, "AWS::EC2::VPCEndpoint").values()
    }


def _network_without_nat(synth: Synthesized) -> Stack:
    """A network stack of the stage's config with natGateways 0, the sandbox-only setting no stage uses today."""
    stack = NetworkStack(App(), "billing-isolated-network", config=replace(synth.built.config, nat_gateways=0))
    Template.from_stack(stack)  # synthesizes it, so its annotations exist
    return stack


def test_vpc_without_nat_has_no_internet_path_and_isolated_subnets(dev: Synthesized) -> None:
    template = Template.from_stack(_network_without_nat(dev))
    template.resource_count_is("AWS::EC2::NatGateway", 0)
    template.resource_count_is("AWS::EC2::InternetGateway", 0)
    # Two AZs x (database + functions), all isolated: no route to 0.0.0.0/0 anywhere.
    template.resource_count_is("AWS::EC2::Subnet", 4)
    template.resource_count_is("AWS::EC2::Route", 0)


def test_vpc_without_nat_warns_that_only_the_sandbox_provider_works(dev: Synthesized) -> None:
    Annotations.from_stack(_network_without_nat(dev)).has_warning(
        "*", Match.string_like_regexp("cannot reach Stripe or Adyen")
    )


def _function_subnet_routes(template: cfn.Template) -> dict[str, list[dict[str, Any]]]:
    """Function subnet logical id -> the routes of its route table."""
    tables = {
        association["Properties"]["SubnetId"]["Ref"]: association["Properties"]["RouteTableId"]["Ref"]
        for association in cfn.of_type(template, "AWS::EC2::SubnetRouteTableAssociation").values()
    }
    routes = cfn.of_type(template, "AWS::EC2::Route").values()
    return {
        subnet: [
            route["Properties"] for route in routes if route["Properties"]["RouteTableId"] == {"Ref": tables[subnet]}
        ]
        for subnet in cfn.of_type(template, "AWS::EC2::Subnet")
        if FUNCTION_SUBNETS in subnet
    }


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_function_subnets_reach_the_internet_through_the_stages_nat_gateways(
    stage: str, request: pytest.FixtureRequest
) -> None:
    synth: Synthesized = request.getfixturevalue(stage)
    template = synth.raw["network"]
    nat_gateways = cfn.of_type(template, "AWS::EC2::NatGateway")
    # The payment providers are on the internet: dev shares one NAT gateway, prod has one per AZ.
    assert len(nat_gateways) == synth.built.config.nat_gateways >= 1
    for gateway in nat_gateways.values():
        assert gateway["Properties"]["SubnetId"]["Ref"].startswith(f"Vpc{PUBLIC_SUBNETS}Subnet")
    routes = _function_subnet_routes(template)
    assert len(routes) == MAX_AZS
    used = set()
    for subnet_routes in routes.values():
        (default,) = [route for route in subnet_routes if route.get("DestinationCidrBlock") == "0.0.0.0/0"]
        (gateway_id,) = cfn.references(default["NatGatewayId"])
        assert gateway_id in nat_gateways
        used.add(gateway_id)
    # With one per AZ, each AZ's functions leave through a gateway of their own: losing an AZ loses only its share.
    assert used == set(nat_gateways)


def test_vpc_endpoints_cover_secrets_queues_events_kms_and_s3(dev: Synthesized) -> None:
    # KMS: the card vault seals and unseals card numbers with data keys, from the function subnets.
    assert _endpoint_services(dev.raw["network"]) == {
        "secretsmanager": "Interface",
        "sqs": "Interface",
        "events": "Interface",
        "kms": "Interface",
        "s3": "Gateway",
    }
    for endpoint in cfn.of_type(dev.raw["network"], "AWS::EC2::VPCEndpoint").values():
        if endpoint["Properties"]["VpcEndpointType"] == "Interface":
            # Private DNS: SDK default endpoints resolve into the VPC, so no code carries endpoint URLs.
            assert endpoint["Properties"]["PrivateDnsEnabled"] is True


def test_functions_security_group_allows_only_https_out_and_postgres_to_proxy(dev: Synthesized) -> None:
    network = dev.raw["network"]
    groups = {
        logical_id: group
        for logical_id, group in cfn.of_type(network, "AWS::EC2::SecurityGroup").items()
        if group["Properties"]["GroupDescription"].startswith("Lambda functions")
    }
    assert len(groups) == 1
    ((group_id, group),) = groups.items()
    egress = group["Properties"]["SecurityGroupEgress"]
    assert [(rule["CidrIp"], rule["FromPort"], rule["ToPort"]) for rule in egress] == [("0.0.0.0/0", 443, 443)]
    # The PostgreSQL egress lives in the data stack, next to the proxy it points at.
    postgres_egress = [
        rule["Properties"]
        for rule in cfn.of_type(dev.raw["data"], "AWS::EC2::SecurityGroupEgress").values()
        if rule["Properties"]["FromPort"] == 5432
    ]
    assert len(postgres_egress) == 1
    (imported,) = cfn.references(postgres_egress[0]["GroupId"])
    assert imported.startswith("billing-dev-network:")
    assert group_id in imported


def test_vpc_flow_logs_capture_all_traffic(dev: Synthesized) -> None:
    dev.template("network").has_resource_properties(
        "AWS::EC2::FlowLog", {"ResourceType": "VPC", "TrafficType": "ALL", "LogDestinationType": "cloud-watch-logs"}
    )
