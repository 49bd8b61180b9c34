"""AWS resource names and configuration shared by the CDK app, the local runtime and the functions.

One module so the deployed stack, the local stack and the code that reads the environment cannot drift apart.
Pure Python with no AWS imports: the CDK app, moto-based local runs and every Lambda function import it.

Names are not stage-qualified: one stage (dev, prod) per AWS account and region, so the same name means the same
thing everywhere. Bucket names add the account and region because S3 names are global.
"""

# S105 flags "secret"/"password" in constant names; these are names of secrets and variables, never their values.
# ruff: noqa: S105

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

APP_NAME: Final = "billing"

# --- Events ---------------------------------------------------------------------------------------------------
EVENT_BUS_NAME: Final = "billing-events"
# Every event the outbox relay publishes carries this Source; its DetailType is the outbox row's event_type
# (billing.execution.created, billing.execution.failed, ...), so rules can select on either.
EVENT_SOURCE: Final = "billing.execution"
# Settlement reports announce themselves under their own Source (billing.settlement.events): they are no
# execution's events and do not pass through the outbox.
SETTLEMENT_EVENT_SOURCE: Final = "billing.settlement"
EVENT_ARCHIVE_NAME: Final = "billing-events-archive"

# --- Queues ---------------------------------------------------------------------------------------------------
RETRY_QUEUE_NAME: Final = "billing-retry"
DEAD_LETTER_QUEUE_NAME: Final = "billing-retry-dlq"
# A message the retry consumer fails this many times is parked in the DLQ (and the DLQ alarm fires).
RETRY_MAX_RECEIVE_COUNT: Final = 5

# --- Buckets --------------------------------------------------------------------------------------------------
SETTLEMENT_BUCKET_PREFIX: Final = "billing-provider-settlement-files"
REPORTS_BUCKET_PREFIX: Final = "billing-reports"
ACCESS_LOGS_BUCKET_PREFIX: Final = "billing-access-logs"


def bucket_name(prefix: str, account: str, region: str) -> str:
    """Globally unique bucket name: prefix-account-region (S3 names are shared by every AWS customer)."""
    return f"{prefix}-{account}-{region}"


# --- Secrets --------------------------------------------------------------------------------------------------
DATABASE_SECRET_NAME: Final = "billing/database"
DATABASE_NAME: Final = "billing"
DATABASE_ADMIN_USER: Final = "billing_admin"
JWT_SECRET_NAME: Final = "billing/auth/jwt"
WEBHOOK_SECRET_PREFIX: Final = "billing/webhook/"
WEBHOOK_PROVIDERS: Final = ("stripe", "adyen", "gocardless", "sandbox")


def webhook_secret_name(provider: str) -> str:
    """Secrets Manager name of a provider's webhook signing secret; unknown providers are refused."""
    if provider not in WEBHOOK_PROVIDERS:
        raise ValueError(f"unknown webhook provider {provider!r}; expected one of {', '.join(WEBHOOK_PROVIDERS)}")
    return WEBHOOK_SECRET_PREFIX + provider


# API credentials of the payment providers the engine calls (billing.providers.credentials): one secret per provider,
# billing/provider/<provider>, holding {"platform": {...}, "tenants": {"<tenant id>": {...}}}. The functions that call
# providers get its ARN in <PROVIDER>_CREDENTIALS_SECRET_ID (ENV_PROVIDER_CREDENTIAL_SECRET_IDS); the sandbox has none.
PROVIDER_SECRET_PREFIX: Final = "billing/provider/"
# Where a customer comes back after 3-D Secure or a redirect (the merchant's checkout page); Adyen needs one.
ENV_PROVIDER_RETURN_URL: Final = "PROVIDER_RETURN_URL"
PROVIDERS_WITH_CREDENTIALS: Final = ("stripe", "adyen")
# The engine's public base URL, where a customer's browser reaches the 3-D Secure pages (/3ds/..., /sandbox-acs/...).
ENV_PUBLIC_API_URL: Final = "PUBLIC_API_URL"
DEFAULT_PUBLIC_API_URL: Final = "http://127.0.0.1:8080"


def provider_secret_name(provider: str) -> str:
    """Secrets Manager name of a payment provider's API credentials; providers without credentials are refused."""
    if provider not in PROVIDERS_WITH_CREDENTIALS:
        raise ValueError(
            f"no credentials for provider {provider!r}; expected one of {', '.join(PROVIDERS_WITH_CREDENTIALS)}"
        )
    return PROVIDER_SECRET_PREFIX + provider


# Each database login user (billing.db.roles.LOGIN_USERS) has a rotated RDS-format secret of its own, named
# billing/database/<user>: the functions that connect as that user read it, and so does the migrate function, which
# sets every login user's password in the database from it. The admin's secret (DATABASE_SECRET_NAME) is the
# migrate function's alone.
DATABASE_LOGIN_SECRET_PREFIX: Final = f"{DATABASE_SECRET_NAME}/"


def database_login_secret_name(user: str) -> str:
    """Secrets Manager name of a database login user's own secret."""
    return DATABASE_LOGIN_SECRET_PREFIX + user


# --- Functions and observability --------------------------------------------------------------------------------
METRICS_NAMESPACE: Final = "Billing"
# Emitted by every settlement report run (zero included, dimensions service and period); a payout that does not
# balance alarms on it (infra/stacks/data.py). billing.settlement.observability names every class's metric alike.
SETTLEMENT_PAYOUT_MISMATCH_METRIC: Final = "SettlementDiscrepancy_payout_mismatch"


class FunctionName(StrEnum):
    """Every Lambda function; the value is its folder under functions/."""

    EXECUTE = "execute"
    WEBHOOK = "webhook"
    RECONCILE = "reconcile"
    RETRY_DLQ = "retry_dlq"
    SETTLEMENT_REPORT = "settlement_report"
    OUTBOX_RELAY = "outbox_relay"
    MIGRATE = "migrate"
    AUTHORIZER = "authorizer"
    # The card vault: the only function that ever sees a card number (payment instruments API).
    VAULT = "vault"
    # The auditors' API over the audit trail, and the scheduled sequencer/checkpointer of its Merkle tree.
    AUDIT = "audit"
    AUDIT_CHECKPOINT = "audit_checkpoint"
    # The customer's browser during 3-D Secure: the challenge redirect, the sandbox ACS's pages, the notification.
    THREE_DS = "three_ds"
    # Finance's API over the saved settlement reports: read them, page through discrepancies, resolve them.
    SETTLEMENT_API = "settlement_api"


def service_name(function: FunctionName) -> str:
    """Powertools service name (logs, traces, metric dimension) of a function: billing-<name>."""
    return f"{APP_NAME}-{function.value.replace('_', '-')}"


# Environment variables the functions read. The CDK app sets exactly these; nothing else is read from the
# environment, and a missing one is an error at cold start, never a silent default.
ENV_DATABASE_SECRET_ARN: Final = "DATABASE_SECRET_ARN"  # JSON secret: username, password, port (RDS format)
ENV_DATABASE_PROXY_ENDPOINT: Final = "DATABASE_PROXY_ENDPOINT"  # host the functions connect to (RDS Proxy)
ENV_DATABASE_NAME: Final = "DATABASE_NAME"
# The migrate function's only: JSON {group role: secret ARN} of every login user, whose passwords it sets.
ENV_DATABASE_LOGIN_SECRET_ARNS: Final = "DATABASE_LOGIN_SECRET_ARNS"
ENV_EVENT_BUS_NAME: Final = "EVENT_BUS_NAME"
ENV_RETRY_QUEUE_URL: Final = "RETRY_QUEUE_URL"
ENV_DLQ_URL: Final = "DLQ_URL"
ENV_SETTLEMENT_BUCKET: Final = "SETTLEMENT_BUCKET"
ENV_REPORTS_BUCKET: Final = "REPORTS_BUCKET"
ENV_JWT_SECRET_ARN: Final = "JWT_SECRET_ARN"
# Provider -> the variable holding the ARN of its credentials secret; set on the functions that call providers
# (execute, retry_dlq, reconcile, vault) and no other.
ENV_STRIPE_CREDENTIALS_SECRET_ID: Final = "STRIPE_CREDENTIALS_SECRET_ID"
ENV_ADYEN_CREDENTIALS_SECRET_ID: Final = "ADYEN_CREDENTIALS_SECRET_ID"
ENV_PROVIDER_CREDENTIAL_SECRET_IDS: Final[Mapping[str, str]] = MappingProxyType(
    {"stripe": ENV_STRIPE_CREDENTIALS_SECRET_ID, "adyen": ENV_ADYEN_CREDENTIALS_SECRET_ID}
)
ENV_MIGRATIONS_DIR: Final = "BILLING_MIGRATIONS_DIR"  # read by billing.paths.migrations_dir()
ENV_AUTHORITATIVE_WRITE_ENABLED: Final = "AUTHORITATIVE_WRITE_ENABLED"
ENV_POWERTOOLS_SERVICE_NAME: Final = "POWERTOOLS_SERVICE_NAME"
ENV_POWERTOOLS_METRICS_NAMESPACE: Final = "POWERTOOLS_METRICS_NAMESPACE"
ENV_LOG_LEVEL: Final = "LOG_LEVEL"
# Optional tuning knobs (documented defaults in billing.domain.backoff and billing.services.reconciliation).
ENV_RETRY_BACKOFF_BASE_SECONDS: Final = "RETRY_BACKOFF_BASE_SECONDS"
ENV_RETRY_BACKOFF_CAP_SECONDS: Final = "RETRY_BACKOFF_CAP_SECONDS"
ENV_RECONCILE_PENDING_AFTER_SECONDS: Final = "RECONCILE_PENDING_AFTER_SECONDS"
ENV_RECONCILE_MAX_PENDING_AGE_SECONDS: Final = "RECONCILE_MAX_PENDING_AGE_SECONDS"
ENV_RECONCILE_STUCK_AFTER_SECONDS: Final = "RECONCILE_STUCK_AFTER_SECONDS"
ENV_RECONCILE_BATCH_SIZE: Final = "RECONCILE_BATCH_SIZE"
ENV_RECONCILE_CUSTOMER_ACTION_TIMEOUT_SECONDS: Final = "RECONCILE_CUSTOMER_ACTION_TIMEOUT_SECONDS"

# --- HTTP API ---------------------------------------------------------------------------------------------------
API_BASE_PATH: Final = "/api/v1/billing"
# Request body limits, per route (Route.max_body_bytes): larger bodies get 413 payload_too_large. The local gateway
# applies them exactly; in AWS, WAF and API Gateway apply them as docs/infrastructure.md ("Request size limits")
# describes. The execute API's bodies are small JSON documents, so its routes keep a tight limit.
MAX_REQUEST_BODY_BYTES: Final = 16 * 1024
# Providers send what they send: GoCardless batches many events into one delivery and a Stripe event embeds the
# whole object. A delivery refused for its size is never verified, and the provider retries it until it gives up.
MAX_WEBHOOK_BODY_BYTES: Final = 1024 * 1024
# API Gateway REST's own hard payload limit (not configurable); no route can accept more.
API_GATEWAY_MAX_PAYLOAD_BYTES: Final = 10 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Route:
    """One API route: which function serves it, whether the bearer-token authorizer guards it, its body limit."""

    method: str
    path: str
    function: FunctionName
    authorized: bool
    max_body_bytes: int = MAX_REQUEST_BODY_BYTES

    def __post_init__(self) -> None:
        if not 0 < self.max_body_bytes <= API_GATEWAY_MAX_PAYLOAD_BYTES:
            raise ValueError(f"{self.method} {self.path}: max_body_bytes must be in 1..{API_GATEWAY_MAX_PAYLOAD_BYTES}")


ROUTES: Final = (
    Route("POST", f"{API_BASE_PATH}/executions", FunctionName.EXECUTE, authorized=True),
    Route("GET", f"{API_BASE_PATH}/executions", FunctionName.EXECUTE, authorized=True),
    Route("GET", f"{API_BASE_PATH}/executions/{{id}}", FunctionName.EXECUTE, authorized=True),
    Route("POST", f"{API_BASE_PATH}/executions/{{id}}/cancel", FunctionName.EXECUTE, authorized=True),
    Route("POST", f"{API_BASE_PATH}/executions/{{id}}/refunds", FunctionName.EXECUTE, authorized=True),
    # A tenant's risk rules (billing.risk): read, and replaced as a whole by the next version.
    Route("GET", f"{API_BASE_PATH}/risk/rules", FunctionName.EXECUTE, authorized=True),
    Route("PUT", f"{API_BASE_PATH}/risk/rules", FunctionName.EXECUTE, authorized=True),
    Route("GET", f"{API_BASE_PATH}/openapi.json", FunctionName.EXECUTE, authorized=True),
    # Providers cannot present our JWT: webhooks authenticate by the provider's signature, checked in the function.
    Route(
        "POST",
        f"{API_BASE_PATH}/webhook/{{provider}}",
        FunctionName.WEBHOOK,
        authorized=False,
        max_body_bytes=MAX_WEBHOOK_BODY_BYTES,
    ),
    # The whole payment instrument family goes to the vault: one function handles instruments, and the execute
    # function only reads them when it charges one.
    Route("POST", f"{API_BASE_PATH}/payment-instruments", FunctionName.VAULT, authorized=True),
    Route("GET", f"{API_BASE_PATH}/payment-instruments", FunctionName.VAULT, authorized=True),
    Route("GET", f"{API_BASE_PATH}/payment-instruments/{{id}}", FunctionName.VAULT, authorized=True),
    Route("DELETE", f"{API_BASE_PATH}/payment-instruments/{{id}}", FunctionName.VAULT, authorized=True),
    # The customer's browser cannot present our JWT either: these pages are reached through the random ids the
    # execution's next_action handed out (billing.authentication.challenge).
    Route("GET", f"{API_BASE_PATH}/3ds/{{tenant}}/{{id}}/challenge", FunctionName.THREE_DS, authorized=False),
    Route("POST", f"{API_BASE_PATH}/3ds/{{tenant}}/{{id}}/notify", FunctionName.THREE_DS, authorized=False),
    Route("POST", f"{API_BASE_PATH}/sandbox-acs/{{acs}}", FunctionName.THREE_DS, authorized=False),
    Route("POST", f"{API_BASE_PATH}/sandbox-acs/{{acs}}/code", FunctionName.THREE_DS, authorized=False),
    Route("POST", f"{API_BASE_PATH}/sandbox-acs/{{acs}}/cancel", FunctionName.THREE_DS, authorized=False),
    Route("POST", f"{API_BASE_PATH}/executions/{{id}}/review", FunctionName.EXECUTE, authorized=True),
    # The audit trail, for auditors: the function also requires the token's `auditor` scope (403 otherwise).
    Route("GET", f"{API_BASE_PATH}/audit/events", FunctionName.AUDIT, authorized=True),
    Route("GET", f"{API_BASE_PATH}/audit/checkpoints/latest", FunctionName.AUDIT, authorized=True),
    Route("GET", f"{API_BASE_PATH}/audit/proofs/{{seq}}", FunctionName.AUDIT, authorized=True),
    # Settlement reports, for finance: the function also requires the token's `finance` scope (403 otherwise).
    # Platform-wide: one provider's file covers many tenants, so they are not filtered by the caller's tenant.
    Route("GET", f"{API_BASE_PATH}/settlement-reports", FunctionName.SETTLEMENT_API, authorized=True),
    Route("GET", f"{API_BASE_PATH}/settlement-reports/{{id}}", FunctionName.SETTLEMENT_API, authorized=True),
    Route(
        "GET", f"{API_BASE_PATH}/settlement-reports/{{id}}/discrepancies", FunctionName.SETTLEMENT_API, authorized=True
    ),
    Route(
        "POST",
        f"{API_BASE_PATH}/settlement-reports/{{id}}/discrepancies/{{discrepancy_id}}/resolve",
        FunctionName.SETTLEMENT_API,
        authorized=True,
    ),
)

# --- Schedules (EventBridge Scheduler expressions, UTC) ------------------------------------------------------
OUTBOX_RELAY_SCHEDULE: Final = "rate(1 minute)"
RECONCILE_SCHEDULE: Final = "rate(5 minutes)"
SETTLEMENT_REPORT_DAILY_SCHEDULE: Final = "cron(0 2 * * ? *)"
SETTLEMENT_REPORT_WEEKLY_SCHEDULE: Final = "cron(0 3 ? * MON *)"


class ReportPeriod(StrEnum):
    """The settlement_report function's input: {"period": "daily"} or {"period": "weekly"}."""

    DAILY = "daily"
    WEEKLY = "weekly"


# --- Card vault ---------------------------------------------------------------------------------------------------
# The KMS key that wraps the vault's data keys (one data key per stored card, bound to its tenant and token by the
# encryption context), and the Secrets Manager secret holding the fingerprint keys (HMAC-SHA-256, versioned; a
# tenant's key is derived from the current version). Both stay outside the database.
VAULT_KMS_KEY_ALIAS: Final = "alias/billing-vault"
FINGERPRINT_SECRET_NAME: Final = "billing/vault/fingerprint-keys"
ENV_VAULT_KMS_KEY_ID: Final = "VAULT_KMS_KEY_ID"
ENV_FINGERPRINT_SECRET_ID: Final = "FINGERPRINT_SECRET_ID"


# --- Audit trail ----------------------------------------------------------------------------------------------------
# Checkpoints of the audit tree are signed with an HMAC key ring kept in this secret (billing.audit.keys) and
# written to this bucket, which has Object Lock in compliance mode (PCI DSS 10.5.1: twelve months retained).
AUDIT_CHECKPOINT_KEY_SECRET_NAME: Final = "billing/audit/checkpoint-keys"
AUDIT_CHECKPOINTS_BUCKET_PREFIX: Final = "billing-audit-checkpoints"
# A little over a year, so a checkpoint outlives the twelve months PCI DSS asks for whatever the day it was written.
AUDIT_CHECKPOINT_RETENTION_DAYS: Final = 400
AUDIT_CHECKPOINT_SCHEDULE: Final = "rate(1 minute)"
ENV_AUDIT_CHECKPOINT_KEY_SECRET_ID: Final = "AUDIT_CHECKPOINT_KEY_SECRET_ID"
ENV_AUDIT_CHECKPOINTS_BUCKET: Final = "AUDIT_CHECKPOINTS_BUCKET"
# "true" in AWS: refuse to write a checkpoint to a bucket without Object Lock.
ENV_AUDIT_REQUIRE_OBJECT_LOCK: Final = "AUDIT_REQUIRE_OBJECT_LOCK"
# JSON list of the secrets (ids or ARNs) whose rotations the checkpoint function records as audit entries.
ENV_AUDIT_WATCHED_CREDENTIALS: Final = "AUDIT_WATCHED_CREDENTIALS"
# Rejected bearer tokens on their way into the trail (PCI DSS 10.2.1.4): the authorizer, which has no database,
# sends one message per rejection; the audit checkpoint function records and deletes them (billing.audit.intake).
AUDIT_INTAKE_QUEUE_NAME: Final = "billing-audit-intake"
ENV_AUDIT_INTAKE_QUEUE_URL: Final = "AUDIT_INTAKE_QUEUE_URL"
# The token scope the audit API requires (space-separated `scope` claim; billing.auth.tokens).
AUDITOR_SCOPE: Final = "auditor"
# The token scope the settlement reports API requires.
FINANCE_SCOPE: Final = "finance"
