"""What each Lambda function is given: size, timeout, network placement and the resources it may touch.

This table is the least-privilege contract: the service stack grants a function exactly the accesses listed here
and sets only the environment variables those accesses need. Which database role a function connects as is not
repeated here: billing.db.roles.FUNCTION_ROLES says it, for the local stack and the tests as much as for AWS.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, auto
from types import MappingProxyType

from aws_cdk import Duration

from billing import resource_names as names
from billing.db.roles import FUNCTION_ROLES, DatabaseRole
from billing.resource_names import FunctionName


class Access(Enum):
    """A resource a function may use, beyond its own logs and traces."""

    # RDS Proxy, as the function's own role (FUNCTION_ROLES): the secret of that role's login user and no other; for
    # the owner (the migrations) the cluster admin's secret, since the admin is who SETs ROLE billing_owner.
    DATABASE = auto()
    # Every login user's secret: the migrations set each user's password from it on every run.
    READ_DATABASE_LOGIN_SECRETS = auto()
    SEND_RETRY = auto()
    CONSUME_RETRY = auto()  # SQS event source on the retry queue
    SEND_DLQ = auto()  # parks a message whose retries are exhausted, without waiting for the redrive policy
    CONSUME_DLQ = auto()  # operator-triggered redrive from the DLQ
    READ_SETTLEMENT_FILES = auto()
    WRITE_REPORTS = auto()
    PUT_EVENTS = auto()
    READ_WEBHOOK_SECRETS = auto()
    READ_JWT_SECRET = auto()
    # GenerateDataKey and Decrypt on the vault's KMS key, under the encryption context the vault binds each card's
    # data key to; the key's own policy admits the vault function's role alone (stacks/data.py).
    VAULT_KMS = auto()
    READ_FINGERPRINT_SECRET = auto()
    # Write (and read back) signed checkpoints in the Object Lock bucket, under compliance-mode retention.
    WRITE_AUDIT_CHECKPOINTS = auto()
    READ_AUDIT_KEYS = auto()  # the checkpoint signing key ring
    # DescribeSecret, never GetSecretValue, on every secret of the data stack: each new current version becomes an
    # audit entry (billing.audit.rotations; PCI DSS 10.2.1.5).
    WATCH_CREDENTIAL_ROTATIONS = auto()
    # The audit intake queue (billing.audit.intake; PCI DSS 10.2.1.4): the authorizer may only send a rejected token
    # to it, the checkpoint function may only receive and delete what it has recorded.
    SEND_AUTH_FAILURES = auto()
    RECORD_AUTH_FAILURES = auto()
    # Charges, refunds, status checks and card tokenization at the payment providers: read every provider's API
    # credentials (billing/provider/<provider>, billing.providers.credentials). Their HTTPS calls leave through the
    # NAT gateways (stacks/network.py).
    CALL_PROVIDERS = auto()


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """Sizing and permissions of one function."""

    name: FunctionName
    description: str
    memory_mb: int
    timeout: Duration
    accesses: frozenset[Access]
    in_vpc: bool = True

    @property
    def database_role(self) -> DatabaseRole | None:
        """The role whose secret the function reads to connect, or None if it never connects to the database."""
        return FUNCTION_ROLES[self.name] if Access.DATABASE in self.accesses else None


def _spec(
    name: FunctionName,
    description: str,
    *,
    memory_mb: int,
    timeout: Duration,
    accesses: tuple[Access, ...],
    in_vpc: bool = True,
) -> tuple[FunctionName, FunctionSpec]:
    # Whoever reads the login users' passwords could log in as any of them: that is the owner's business only.
    if Access.READ_DATABASE_LOGIN_SECRETS in accesses and FUNCTION_ROLES[name] is not DatabaseRole.OWNER:
        raise ValueError(f"{name}: only the database owner (the migrations) may read the login users' secrets")
    # Card numbers are sealed and unsealed by the vault only: nothing else may hold their data keys.
    if Access.VAULT_KMS in accesses and FUNCTION_ROLES[name] is not DatabaseRole.VAULT:
        raise ValueError(f"{name}: only the card vault (role billing_vault) may use the vault's KMS key")
    return name, FunctionSpec(name, description, memory_mb, timeout, frozenset(accesses), in_vpc)


_A = Access
FUNCTIONS: Mapping[FunctionName, FunctionSpec] = MappingProxyType(
    dict(
        [
            _spec(
                FunctionName.EXECUTE,
                "Billing API: create, list, read and cancel executions",
                # CPU-bound cold starts: an estimated 1.2 s at 1024 MB, 2.4 s at 512 (docs/infrastructure.md).
                memory_mb=1024,
                # API Gateway gives up on an integration after 29 s; stopping at 25 s leaves time to answer.
                timeout=Duration.seconds(25),
                accesses=(_A.DATABASE, _A.SEND_RETRY, _A.CALL_PROVIDERS),
            ),
            _spec(
                FunctionName.WEBHOOK,
                "Provider webhooks, authenticated by signature",
                # Providers wait on the answer: half the cold start of 256 MB for the same few invocations.
                memory_mb=512,
                timeout=Duration.seconds(15),
                accesses=(_A.DATABASE, _A.READ_WEBHOOK_SECRETS),
            ),
            _spec(
                FunctionName.RECONCILE,
                "Follows pending and processing executions to a final state",
                memory_mb=512,
                # Ends well inside its 5-minute schedule so two runs never overlap.
                timeout=Duration.minutes(4),
                accesses=(_A.DATABASE, _A.READ_SETTLEMENT_FILES, _A.SEND_RETRY, _A.CALL_PROVIDERS),
            ),
            _spec(
                FunctionName.RETRY_DLQ,
                "Retries retryable provider failures; parks exhausted ones in the DLQ and redrives them on request",
                memory_mb=256,
                timeout=Duration.seconds(60),
                accesses=(
                    _A.DATABASE,
                    _A.CONSUME_RETRY,
                    _A.SEND_RETRY,
                    _A.SEND_DLQ,
                    _A.CONSUME_DLQ,
                    _A.CALL_PROVIDERS,
                ),
            ),
            _spec(
                FunctionName.SETTLEMENT_REPORT,
                "Daily and weekly settlement reports",
                memory_mb=1024,
                timeout=Duration.minutes(10),
                # PUT_EVENTS: each report's summary event, published after its commit (billing.settlement.events).
                accesses=(_A.DATABASE, _A.READ_SETTLEMENT_FILES, _A.WRITE_REPORTS, _A.PUT_EVENTS),
            ),
            _spec(
                FunctionName.OUTBOX_RELAY,
                "Publishes committed outbox rows to the billing event bus",
                memory_mb=256,
                # Under its 1-minute schedule, so one relay run ends before the next begins.
                timeout=Duration.seconds(50),
                accesses=(_A.DATABASE, _A.PUT_EVENTS),
            ),
            _spec(
                FunctionName.MIGRATE,
                "Applies sql/ migrations on deploy",
                memory_mb=512,
                timeout=Duration.minutes(5),
                accesses=(_A.DATABASE, _A.READ_DATABASE_LOGIN_SECRETS),
            ),
            _spec(
                FunctionName.AUTHORIZER,
                "Bearer-token authorizer for the billing API",
                # In front of every API call; at 256 MB (a seventh of a vCPU) its import alone is estimated at 1.7 s.
                memory_mb=1024,
                timeout=Duration.seconds(5),
                accesses=(_A.READ_JWT_SECRET, _A.SEND_AUTH_FAILURES),
                # Needs no database, so it stays out of the VPC and its cold starts stay short.
                in_vpc=False,
            ),
            _spec(
                FunctionName.VAULT,
                "Card vault: payment instruments API, the only code that sees a card number",
                # Saving a card is part of a checkout: the customer waits on its cold start as on execute's.
                memory_mb=1024,
                timeout=Duration.seconds(25),
                # CALL_PROVIDERS: a card is tokenized at the provider from inside the vault, the one holder of PANs.
                accesses=(_A.DATABASE, _A.VAULT_KMS, _A.READ_FINGERPRINT_SECRET, _A.CALL_PROVIDERS),
            ),
            _spec(
                FunctionName.THREE_DS,
                "3-D Secure pages for the customer's browser: challenge redirect, sandbox ACS, notification",
                # The customer's browser waits on it, and its notification submits the charge as execute does.
                memory_mb=1024,
                timeout=Duration.seconds(25),
                # After a challenge it submits the charge, as the execute function would.
                accesses=(_A.DATABASE, _A.SEND_RETRY, _A.CALL_PROVIDERS),
            ),
            _spec(
                FunctionName.AUDIT,
                "Audit trail API for auditors: events, checkpoints, inclusion proofs",
                memory_mb=512,
                timeout=Duration.seconds(25),
                accesses=(_A.DATABASE,),
            ),
            _spec(
                FunctionName.SETTLEMENT_API,
                "Settlement reports API for finance: reports, discrepancies, resolutions",
                memory_mb=512,
                timeout=Duration.seconds(25),
                accesses=(_A.DATABASE,),
            ),
            _spec(
                FunctionName.AUDIT_CHECKPOINT,
                "Sequences audit entries into the Merkle tree and writes signed checkpoints",
                memory_mb=512,
                # Under its 1-minute schedule, so one run ends before the next begins (the sequencer's advisory
                # lock keeps overlapping runs correct anyway).
                timeout=Duration.seconds(50),
                accesses=(
                    _A.DATABASE,
                    _A.WRITE_AUDIT_CHECKPOINTS,
                    _A.READ_AUDIT_KEYS,
                    _A.WATCH_CREDENTIAL_ROTATIONS,
                    _A.RECORD_AUTH_FAILURES,
                ),
            ),
        ]
    )
)


def vault_role_name(stage: str, region: str) -> str:
    """The vault function's IAM role name, fixed so the vault key's policy (data stack, deployed first) can name the
    role before it exists: KMS refuses a key policy whose principal does not exist yet, but not a condition on
    aws:PrincipalArn. IAM names are global to the account, so the region is part of it."""
    return f"{names.APP_NAME}-{stage}-{FunctionName.VAULT.value}-{region}"


# SQS hides a received message for this long; AWS advises six times the consumer's timeout so a batch that is
# still being retried by Lambda is not handed to a second consumer.
RETRY_QUEUE_VISIBILITY_TIMEOUT = Duration.seconds(FUNCTIONS[FunctionName.RETRY_DLQ].timeout.to_seconds() * 6)

# A drained batch stays hidden while its run records it and commits; twice the run's timeout, so a message is handed
# out again only after the run that received it has certainly ended (then it is recorded again: at least once).
AUDIT_INTAKE_VISIBILITY_TIMEOUT = Duration.seconds(FUNCTIONS[FunctionName.AUDIT_CHECKPOINT].timeout.to_seconds() * 2)
