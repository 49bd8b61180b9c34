"""Network stack: the VPC, its subnets, the VPC endpoints the functions use and the functions' security group."""

from __future__ import annotations

from typing import Any

from aws_cdk import Annotations, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.config import StageConfig

DATABASE_SUBNETS = "database"
FUNCTION_SUBNETS = "functions"
PUBLIC_SUBNETS = "public"
# Two AZs: Aurora and RDS Proxy need subnets in at least two, and each interface endpoint is billed per AZ.
MAX_AZS = 2
VPC_CIDR = "10.40.0.0/16"
NO_PROVIDER_EGRESS_WARNING = "billing:noProviderEgress"


class NetworkStack(Stack):
    """VPC: isolated database subnets; function subnets that reach AWS through endpoints, the providers through NAT."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        with_nat = config.nat_gateways > 0
        subnets = [
            ec2.SubnetConfiguration(name=DATABASE_SUBNETS, subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24),
            # With a NAT the functions can also call payment providers on the internet; without one they reach
            # only AWS services (through the endpoints below) and the database, which is all the sandbox provider needs.
            # AWS traffic keeps going through the endpoints either way: NAT bills every gigabyte it carries.
            ec2.SubnetConfiguration(
                name=FUNCTION_SUBNETS,
                subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS if with_nat else ec2.SubnetType.PRIVATE_ISOLATED,
                cidr_mask=22,
            ),
        ]
        if with_nat:
            subnets.append(
                ec2.SubnetConfiguration(name=PUBLIC_SUBNETS, subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=26)
            )
        else:
            Annotations.of(self).add_warning_v2(
                NO_PROVIDER_EGRESS_WARNING,
                f"Stage {config.name} has natGateways 0: the functions cannot reach Stripe or Adyen, only the sandbox "
                "provider works. Set natGateways >= 1 to charge real providers.",
            )
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(VPC_CIDR),
            max_azs=MAX_AZS,
            nat_gateways=config.nat_gateways,
            subnet_configuration=subnets,
        )
        self.function_subnets = ec2.SubnetSelection(subnet_group_name=FUNCTION_SUBNETS)
        self.database_subnets = ec2.SubnetSelection(subnet_group_name=DATABASE_SUBNETS)

        flow_logs = logs.LogGroup(
            self, "FlowLogs", retention=config.log_group_retention, removal_policy=config.removal_policy
        )
        self.vpc.add_flow_log("FlowLog", destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs))

        self.vpc.add_gateway_endpoint(
            "S3", service=ec2.GatewayVpcEndpointAwsService.S3, subnets=[self.function_subnets]
        )
        interface_services = {
            "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
            "Sqs": ec2.InterfaceVpcEndpointAwsService.SQS,
            "EventBridge": ec2.InterfaceVpcEndpointAwsService.EVENTBRIDGE,
            # The card vault's data keys (GenerateDataKey, Decrypt): without it a stage without NAT cannot seal a card.
            "Kms": ec2.InterfaceVpcEndpointAwsService.KMS,
        }
        # HTTPS from inside the VPC only (functions and the secret rotation function). Private DNS makes the SDKs'
        # default endpoints resolve to these, so no code needs endpoint URLs.
        self.endpoint_security_group = ec2.SecurityGroup(
            self,
            "EndpointSecurityGroup",
            vpc=self.vpc,
            description="Interface VPC endpoints: HTTPS from the VPC",
            allow_all_outbound=False,
        )
        self.endpoint_security_group.add_ingress_rule(ec2.Peer.ipv4(VPC_CIDR), ec2.Port.tcp(443), "HTTPS from the VPC")
        self.endpoints = {
            name: self.vpc.add_interface_endpoint(
                name,
                service=service,
                subnets=self.function_subnets,
                private_dns_enabled=True,
                open=False,
                security_groups=[self.endpoint_security_group],
            )
            for name, service in interface_services.items()
        }

        self.functions_security_group = ec2.SecurityGroup(
            self,
            "FunctionsSecurityGroup",
            vpc=self.vpc,
            description="Lambda functions: HTTPS out; PostgreSQL to RDS Proxy is added by the data stack",
            allow_all_outbound=False,
        )
        self.functions_security_group.add_egress_rule(
            ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "HTTPS to VPC endpoints, S3 and, with a NAT, payment providers"
        )
