"""Network stack: subnets, VPC endpoints and the functions' security group."""

from __future__ import annotations

import pytest
from aws_cdk.assertions import Match

from tests.infrastructure import cfn
from tests.infrastructure.conftest import Synthesized

pytestmark = pytest.mark.infrastructure


def _endpoint_services(template: cfn.Template) -> dict[str, str]:
    """Service suffix (secretsmanager, sqs, events, kms, s3) -> endpoint type."""
    return {
        endpoint["Properties"]["ServiceName"]["Fn::Join"][1][-1].lstrip("."): endpoint["Properties"]["VpcEndpointType"]
        for endpoint in cfn.of_type(template, "AWS::EC2::VPCEndpoint").values()
    }


def test_vpc_without_nat_has_no_internet_path_and_isolated_subnets(dev: Synthesized) -> None:
    template = dev.template("network")
    template.resource_count_is("AWS::EC2::NatGateway", 0)
    template.resource_count_is("AWS::EC2::InternetGateway", 0)
    # Two AZs x (database + functions), all isolated: no route to 0.0.0.0/0 anywhere.
    template.resource_count_is("AWS::EC2::Subnet", 4)
    template.resource_count_is("AWS::EC2::Route", 0)


def test_vpc_with_nat_gives_function_subnets_egress(prod: Synthesized) -> None:
    template = prod.template("network")
    template.resource_count_is("AWS::EC2::NatGateway", prod.built.config.nat_gateways)
    template.has_resource_properties(
        "AWS::EC2::Route",
        {"DestinationCidrBlock": "0.0.0.0/0", "NatGatewayId": Match.any_value()},
    )


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
