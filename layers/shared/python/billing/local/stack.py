"""The whole system on one machine: PostgreSQL, moto in server mode for AWS, and the API over HTTP.

    with LocalStack(port=0) as stack:
        stack.every(5, "outbox-relay", lambda: stack.invoke(FunctionName.OUTBOX_RELAY, {}))
        urlopen(stack.base_url + "/api/v1/billing/executions")

Every AWS resource the functions use is created in moto under its name from billing.resource_names, and the
environment variables the CDK app sets in AWS are set here in os.environ, so the real handlers run unchanged.
The environment is restored when the stack stops. The functions run in containers of their own (processes, see
billing.local.containers), each with the environment it was started with and at most the dev stage's reserved
concurrency of them per function (cdk.json); what they write, warnings included, is the functions' output (this
process's stdout), not the terminal's stderr.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import boto3

from billing import resource_names as names
from billing.auth.tokens import LOCAL_TOKEN_SETTINGS, token_settings_secret_value
from billing.db.connection import connect
from billing.db.connection_provider import role_url_variable
from billing.db.migrations import apply_migrations
from billing.db.roles import RUNTIME_ROLES, login_url
from billing.instruments.fingerprints import fingerprint_secret_value
from billing.local.api_gateway import FUNCTIONS_DIR, LocalApiGateway, LocalFunctions, LocalHttpServer
from billing.local.containers import LOCAL_ACCOUNT_ID, LOCAL_REGION
from billing.local.event_sources import SqsEventSource
from billing.paths import REPO_ROOT
from billing.providers.directory import (
    ENV_STRIPE_API_BASE,
    ENV_STRIPE_SECRET_ID,
    ENV_STRIPE_SERVER_PROFILE,
)
from billing.resource_names import FunctionName
from billing.webhooks.secrets import seed_webhook_secrets, webhook_secrets_from_env

if TYPE_CHECKING:
    from billing.local.localstripe import LocalStripe

log = logging.getLogger("billing.local.stack")

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8080
ENV_PORT: Final = "PORT"
ENV_MOTO_PORT: Final = "MOTO_PORT"
# Local schedules (AWS: the event source mapping, and every minute / five minutes, see resource_names).
RETRY_POLL_SECONDS: Final = 1.0
OUTBOX_RELAY_SECONDS: Final = 2.0
RECONCILE_SECONDS: Final = 5.0
AUDIT_CHECKPOINT_SECONDS: Final = 5.0
LOCAL_TUNING: Final = {
    names.ENV_RETRY_BACKOFF_BASE_SECONDS: "1",
    names.ENV_RETRY_BACKOFF_CAP_SECONDS: "4",
    names.ENV_RECONCILE_PENDING_AFTER_SECONDS: "0",
}
# The stage whose reserved concurrency the local functions get (cdk.json), so local load meets the same caps.
LOCAL_CONCURRENCY_STAGE: Final = "dev"
CDK_JSON: Final = REPO_ROOT / "cdk.json"
# Local only: a queue subscribed to every billing event on the bus, so the demo and tests can see what was published.
EVENTS_TAP_QUEUE_NAME: Final = "billing-events-tap"
EVENTS_TAP_RULE_NAME: Final = "billing-events-tap"
# moto accepts any credentials; fixed dummy ones keep real ones out of the process's AWS calls.
_DUMMY_CREDENTIALS: Final = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
# A named profile would take precedence over the dummy credentials (or fail if it does not exist here).
_UNSET_WHILE_RUNNING: Final = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE")


@dataclass(frozen=True, slots=True)
class LocalResources:
    """Names, URLs and ARNs of what the stack created in moto."""

    event_bus_name: str
    event_bus_arn: str
    events_tap_queue_url: str
    retry_queue_url: str
    dlq_url: str
    settlement_bucket: str
    reports_bucket: str
    jwt_secret_arn: str
    webhook_secret_names: tuple[str, ...]
    # The card vault's KMS key (its alias) and fingerprint key secret.
    vault_kms_key_id: str = names.VAULT_KMS_KEY_ALIAS
    fingerprint_secret_arn: str = ""
    # The audit trail's checkpoint key ring and its Object Lock bucket.
    audit_checkpoint_key_secret_arn: str = ""
    audit_checkpoints_bucket: str = ""
    # The authorizer's rejected tokens on their way to the checkpoint function.
    audit_intake_queue_url: str = ""
    # Stripe: the credentials secret, and the Stripe-compatible server (localstripe unless STRIPE_API_BASE is set).
    stripe_credentials_secret_arn: str = ""
    stripe_api_base: str = ""
    stripe_server_profile: str = ""


# LOCAL ONLY: the fingerprint key the local vault uses, recognisably not a production key.
LOCAL_FINGERPRINT_KEY: Final = b"fingerprint-key-dev-NOT_FOR_PROD!"
# LOCAL ONLY: the audit checkpoint key every local stack signs with. Fixed, like the fingerprint key, because the
# embedded database outlives the stack: checkpoints one run signed must still verify in the next run's moto.
LOCAL_CHECKPOINT_KEY_ID: Final = "local-v1"
LOCAL_CHECKPOINT_KEY: Final = b"audit-checkpoint-key-dev-NOT_FOR_PROD"
# LOCAL ONLY: the Stripe API key the local functions present to localstripe (which accepts any key).
LOCAL_STRIPE_API_KEY: Final = "sk_test_local_NOT_FOR_PRODUCTION"
# Where a customer returns after 3-D Secure locally (nothing serves it; the demo plays the customer).
LOCAL_RETURN_URL: Final = "http://127.0.0.1/checkout/return"


def seed_stripe_credentials(secrets: Any) -> str:
    """The Stripe credentials secret (platform account only), in moto; returns its ARN."""
    arn: str = secrets.create_secret(
        Name=names.provider_secret_name("stripe"),
        Description="LOCAL ONLY: a key for localstripe",
        SecretString=json.dumps({"platform": {"api_key": LOCAL_STRIPE_API_KEY}, "tenants": {}}),
    )["ARN"]
    return arn


def seed_vault_keys(kms: Any, secrets: Any) -> str:
    """The vault's KMS key (under its alias) and fingerprint key secret, in moto; returns the secret's ARN."""
    key_id = kms.create_key(Description="LOCAL ONLY: billing card vault data keys")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName=names.VAULT_KMS_KEY_ALIAS, TargetKeyId=key_id)
    arn: str = secrets.create_secret(
        Name=names.FINGERPRINT_SECRET_NAME,
        Description="LOCAL ONLY: a development fingerprint key",
        SecretString=fingerprint_secret_value("local-v1", {"local-v1": LOCAL_FINGERPRINT_KEY}),
    )["ARN"]
    return arn


def seed_audit_checkpoints(s3: Any, secrets: Any, bucket: str, region: str) -> str:
    """The audit checkpoint bucket (Object Lock, compliance mode, as in AWS) and the local key ring; the ring's ARN."""
    from billing.audit.keys import KeyRing, key_ring_secret_value

    s3.create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region}, ObjectLockEnabledForBucket=True
    )
    arn: str = secrets.create_secret(
        Name=names.AUDIT_CHECKPOINT_KEY_SECRET_NAME,
        Description="LOCAL ONLY: the development checkpoint key ring",
        SecretString=key_ring_secret_value(
            KeyRing(LOCAL_CHECKPOINT_KEY_ID, {LOCAL_CHECKPOINT_KEY_ID: LOCAL_CHECKPOINT_KEY})
        ),
    )["ARN"]
    return arn


class PeriodicJob:
    """A function run every `seconds` in its own daemon thread; runs never overlap, a failing run is logged."""

    def __init__(self, name: str, seconds: float, fn: Callable[[], object]) -> None:
        if seconds <= 0:
            raise ValueError("seconds must be positive")
        self.name = name
        self.seconds = seconds
        self._fn = fn
        self._cancelled = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0
        self.failures = 0

    def start(self) -> None:
        if self._thread is not None or self._cancelled.is_set():
            return
        self._thread = threading.Thread(target=self._loop, name=f"billing-local-{self.name}", daemon=True)
        self._thread.start()
        log.info("job %s every %g s", self.name, self.seconds)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def cancel(self) -> None:
        """Stop after the current run (if one is in progress) and wait for it."""
        self._cancelled.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _loop(self) -> None:
        # The first run comes one interval after the start, as with a rate() schedule.
        while not self._cancelled.wait(self.seconds):
            started = time.perf_counter()
            try:
                self._fn()
            except Exception:
                self.failures += 1
                log.exception("job %s failed", self.name)
            else:
                log.debug("job %s ran in %.0f ms", self.name, (time.perf_counter() - started) * 1000)
            finally:
                self.runs += 1


def _port_from_env(variable: str, default: int) -> int:
    raw = os.environ.get(variable)
    if raw is None or raw == "":
        return default
    try:
        port = int(raw)
    except ValueError:
        raise ValueError(f"{variable}={raw!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{variable}={raw!r} is not a port number")
    return port


def stage_concurrency(stage: str = LOCAL_CONCURRENCY_STAGE, cdk_json: Path = CDK_JSON) -> dict[FunctionName, int]:
    """The stage's reservedConcurrency per function, from cdk.json (the CDK app's own source): what caps a
    function's containers locally, and with them its database connections, as it caps them in AWS."""
    try:
        stages = json.loads(cdk_json.read_text())["context"]["stages"]
    except (OSError, KeyError, ValueError):
        return {}  # not a checkout: every function gets the default limit
    reserved = stages.get(stage, {}).get("reservedConcurrency", {})
    known = {function.value for function in FunctionName}
    return {FunctionName(name): int(limit) for name, limit in reserved.items() if name in known}


def configure_logging(level: int = logging.INFO) -> None:
    """Readable stack and request lines on stderr (handlers keep logging Powertools JSON to stdout)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-5s %(message)s", "%H:%M:%S"))
    local = logging.getLogger("billing.local")
    local.handlers = [handler]
    local.setLevel(level)
    local.propagate = False


class LocalStack:
    """Starts the database, moto and the HTTP API on enter; stops them and restores os.environ on exit."""

    def __init__(
        self,
        *,
        host: str = DEFAULT_HOST,
        port: int | None = None,
        database_url: str | None = None,
        moto_port: int | None = None,
        functions_dir: Path = FUNCTIONS_DIR,
        region: str = LOCAL_REGION,
    ) -> None:
        """port: PORT or 8080 when None (0 picks a free one); database_url: DATABASE_URL or the embedded server."""
        self.host = host
        self.port = _port_from_env(ENV_PORT, DEFAULT_PORT) if port is None else port
        self.moto_port = _port_from_env(ENV_MOTO_PORT, 0) if moto_port is None else moto_port
        self.region = region
        self.account_id = LOCAL_ACCOUNT_ID
        self._database_url = database_url
        self._functions_dir = functions_dir
        self._jobs: list[PeriodicJob] = []
        self._exit = ExitStack()
        self._started = False
        self._server: LocalHttpServer | None = None
        self._functions: LocalFunctions | None = None
        self._resources: LocalResources | None = None
        self.database_url = ""
        self.aws_endpoint_url = ""
        self._localstripe: LocalStripe | None = None

    # --- lifecycle ----------------------------------------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Bring everything up; when this returns the API accepts connections on `base_url`."""
        if self._started:
            raise RuntimeError("the local stack is already running")
        started = time.perf_counter()
        try:
            self._bind_http()
            self._set_environment(
                {**_DUMMY_CREDENTIALS, "AWS_DEFAULT_REGION": self.region, "AWS_REGION": self.region},
                unset=_UNSET_WHILE_RUNNING,
            )
            self._start_database()
            self._start_moto()
            stripe_api_base, stripe_profile = self._start_stripe()
            self._resources = self._create_resources(stripe_api_base, stripe_profile)
            self._set_environment(self._function_environment(self._resources))
            self._serve_http()
            self._register_stripe_webhook()
            self._started = True
            for job in self._jobs:
                job.start()
        except BaseException:
            self._exit.close()
            raise
        elapsed = time.perf_counter() - started
        log.info("local stack up in %.1f s: API %s, AWS (moto) %s", elapsed, self.base_url, self.aws_endpoint_url)

    def stop(self) -> None:
        """Stop jobs, the HTTP server and moto, and restore the environment (idempotent)."""
        for job in self._jobs:
            job.cancel()
        self._jobs.clear()
        self._exit.close()
        self._started = False
        self._server = self._functions = self._resources = None
        self._localstripe = None

    def _set_environment(self, values: dict[str, str], unset: tuple[str, ...] = ()) -> None:
        saved = {key: os.environ.get(key) for key in (*values, *unset)}

        def restore() -> None:
            for key, previous in saved.items():
                if previous is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = previous

        self._exit.callback(restore)
        for key in unset:
            os.environ.pop(key, None)
        os.environ.update(values)

    def _start_database(self) -> None:
        from billing.local.embedded_postgres import database_url

        self.database_url = self._database_url or database_url()
        with connect(self.database_url, application_name="billing-local-stack") as conn:
            applied = apply_migrations(conn)
        log.info("database ready (%s)", f"applied {', '.join(applied)}" if applied else "migrations up to date")
        # Each function connects as its own role (billing.db.roles.FUNCTION_ROLES), as in AWS; the admin URL above
        # is only for migrations and the demo's look at the tables.
        self._set_environment(
            {role_url_variable(role): login_url(self.database_url, role) for role in RUNTIME_ROLES},
            unset=("DATABASE_URL",),
        )

    def _start_moto(self) -> None:
        from moto.server import ThreadedMotoServer

        # moto's werkzeug server logs every AWS call at INFO; its warnings and errors still show.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.moto_port, verbose=False)
        server.start()
        self._exit.callback(server.stop)
        host, port = server.get_host_and_port()
        self.aws_endpoint_url = f"http://{host}:{port}"
        # moto keeps its services' state per process, not per server: a stack started after another one in the
        # same process (a test worker running two e2e modules) would find the first one's bus and queues.
        reset = urllib.request.Request(f"{self.aws_endpoint_url}/moto-api/reset", method="POST")  # noqa: S310
        with urllib.request.urlopen(reset, timeout=10):  # noqa: S310 - our own moto server on loopback
            pass
        self._set_environment({"AWS_ENDPOINT_URL": self.aws_endpoint_url})

    def _start_stripe(self) -> tuple[str, str]:
        """localstripe on a free port, or the Stripe-compatible server STRIPE_API_BASE names; (base, profile)."""
        external = os.environ.get(ENV_STRIPE_API_BASE)
        if external:
            return external, os.environ.get(ENV_STRIPE_SERVER_PROFILE) or "stripe"
        from billing.local.localstripe import start_localstripe

        server = start_localstripe()
        self._exit.callback(server.stop)
        self._localstripe = server
        return server.api_base, "localstripe"

    def _register_stripe_webhook(self) -> None:
        """Have our localstripe send its signed events to /webhook/stripe, as a Stripe webhook endpoint would."""
        if self._localstripe is None:
            return
        secret = webhook_secrets_from_env(os.environ)["stripe"][0]
        self._localstripe.register_webhook(f"{self.base_url}{names.API_BASE_PATH}/webhook/stripe", secret)

    @property
    def stripe_api_base(self) -> str:
        return self.resources.stripe_api_base

    def _bind_http(self) -> None:
        # Bound first, so a port already in use fails in milliseconds, before the database and moto start.
        # Connections queue in the listen backlog until _serve_http() starts answering them.
        functions = LocalFunctions(
            self._functions_dir, region=self.region, account_id=self.account_id, concurrency=stage_concurrency()
        )
        self._exit.callback(functions.close)
        functions.warm_up()  # the containers' zygote imports its libraries while the database and moto start
        self._functions = functions
        gateway = LocalApiGateway(functions, region=self.region, account_id=self.account_id)
        server = LocalHttpServer(gateway, self.host, self.port)
        self._server = server
        self._exit.callback(server.server_close)

    def _serve_http(self) -> None:
        server = self._server
        if server is None:
            raise RuntimeError("_bind_http() must run first")
        thread = threading.Thread(target=server.serve_forever, name="billing-local-http", daemon=True)
        thread.start()

        def shut_down() -> None:
            server.shutdown()
            thread.join()

        self._exit.callback(shut_down)

    # --- AWS resources ------------------------------------------------------------------------------------------

    def client(self, service: str) -> Any:
        """A boto3 client talking to this stack's moto server."""
        return boto3.client(service, region_name=self.region, endpoint_url=self.aws_endpoint_url)  # type: ignore[call-overload]

    def _create_resources(self, stripe_api_base: str, stripe_profile: str) -> LocalResources:
        sqs, events, s3, secrets = (self.client(s) for s in ("sqs", "events", "s3", "secretsmanager"))

        bus_arn = events.create_event_bus(Name=names.EVENT_BUS_NAME)["EventBusArn"]
        tap_url = sqs.create_queue(QueueName=EVENTS_TAP_QUEUE_NAME)["QueueUrl"]
        tap_arn = sqs.get_queue_attributes(QueueUrl=tap_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(
            Name=EVENTS_TAP_RULE_NAME,
            EventBusName=names.EVENT_BUS_NAME,
            EventPattern=json.dumps({"source": [names.EVENT_SOURCE]}),
        )
        events.put_targets(
            Rule=EVENTS_TAP_RULE_NAME, EventBusName=names.EVENT_BUS_NAME, Targets=[{"Id": "tap", "Arn": tap_arn}]
        )

        dlq_url = sqs.create_queue(QueueName=names.DEAD_LETTER_QUEUE_NAME)["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(names.RETRY_MAX_RECEIVE_COUNT)}
        retry_url = sqs.create_queue(
            QueueName=names.RETRY_QUEUE_NAME, Attributes={"RedrivePolicy": json.dumps(redrive)}
        )["QueueUrl"]
        intake_url = sqs.create_queue(QueueName=names.AUDIT_INTAKE_QUEUE_NAME)["QueueUrl"]

        buckets = [
            names.bucket_name(prefix, self.account_id, self.region)
            for prefix in (names.SETTLEMENT_BUCKET_PREFIX, names.REPORTS_BUCKET_PREFIX)
        ]
        for bucket in buckets:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": self.region})

        webhook_secrets = webhook_secrets_from_env(os.environ)
        seed_webhook_secrets(secrets, webhook_secrets)
        jwt_arn = secrets.create_secret(
            Name=names.JWT_SECRET_NAME,
            Description="LOCAL ONLY: the public dev key, see docs/local.md",
            SecretString=token_settings_secret_value(LOCAL_TOKEN_SETTINGS),
        )["ARN"]

        fingerprint_arn = seed_vault_keys(self.client("kms"), secrets)
        audit_bucket = names.bucket_name(names.AUDIT_CHECKPOINTS_BUCKET_PREFIX, self.account_id, self.region)
        audit_key_arn = seed_audit_checkpoints(s3, secrets, audit_bucket, self.region)
        stripe_arn = seed_stripe_credentials(secrets)

        log.info("AWS resources created in moto: bus, queues, buckets, vault key, %d secrets", len(webhook_secrets) + 2)
        return LocalResources(
            event_bus_name=names.EVENT_BUS_NAME,
            event_bus_arn=bus_arn,
            events_tap_queue_url=tap_url,
            retry_queue_url=retry_url,
            dlq_url=dlq_url,
            settlement_bucket=buckets[0],
            reports_bucket=buckets[1],
            jwt_secret_arn=jwt_arn,
            webhook_secret_names=tuple(names.webhook_secret_name(p) for p in webhook_secrets),
            fingerprint_secret_arn=fingerprint_arn,
            audit_checkpoint_key_secret_arn=audit_key_arn,
            audit_checkpoints_bucket=audit_bucket,
            audit_intake_queue_url=intake_url,
            stripe_credentials_secret_arn=stripe_arn,
            stripe_api_base=stripe_api_base,
            stripe_server_profile=stripe_profile,
        )

    def _function_environment(self, resources: LocalResources) -> dict[str, str]:
        # What the CDK app sets on the functions (POWERTOOLS_SERVICE_NAME is set per function while it loads).
        return {
            names.ENV_EVENT_BUS_NAME: resources.event_bus_name,
            names.ENV_RETRY_QUEUE_URL: resources.retry_queue_url,
            names.ENV_DLQ_URL: resources.dlq_url,
            names.ENV_SETTLEMENT_BUCKET: resources.settlement_bucket,
            names.ENV_REPORTS_BUCKET: resources.reports_bucket,
            names.ENV_JWT_SECRET_ARN: resources.jwt_secret_arn,
            names.ENV_VAULT_KMS_KEY_ID: resources.vault_kms_key_id,
            names.ENV_FINGERPRINT_SECRET_ID: resources.fingerprint_secret_arn,
            names.ENV_AUDIT_CHECKPOINT_KEY_SECRET_ID: resources.audit_checkpoint_key_secret_arn,
            names.ENV_AUDIT_CHECKPOINTS_BUCKET: resources.audit_checkpoints_bucket,
            names.ENV_AUDIT_INTAKE_QUEUE_URL: resources.audit_intake_queue_url,
            # Rotations of these become audit entries, as in AWS.
            names.ENV_AUDIT_WATCHED_CREDENTIALS: json.dumps(
                [resources.jwt_secret_arn, resources.fingerprint_secret_arn, resources.audit_checkpoint_key_secret_arn]
            ),
            ENV_STRIPE_SECRET_ID: resources.stripe_credentials_secret_arn,
            ENV_STRIPE_API_BASE: resources.stripe_api_base,
            ENV_STRIPE_SERVER_PROFILE: resources.stripe_server_profile,
            names.ENV_PROVIDER_RETURN_URL: os.environ.get(names.ENV_PROVIDER_RETURN_URL) or LOCAL_RETURN_URL,
            # The customer's browser reaches the 3-D Secure pages here.
            names.ENV_PUBLIC_API_URL: self.base_url,
            names.ENV_POWERTOOLS_SERVICE_NAME: names.APP_NAME,
            names.ENV_POWERTOOLS_METRICS_NAMESPACE: names.METRICS_NAMESPACE,
            "POWERTOOLS_TRACE_DISABLED": "true",
            names.ENV_LOG_LEVEL: os.environ.get(names.ENV_LOG_LEVEL) or "INFO",
            # Local pace: retries seconds apart instead of minutes, and a debit is reconciled on the next run
            # instead of after days. Each stays overridable from the calling environment.
            **{name: os.environ.get(name) or value for name, value in LOCAL_TUNING.items()},
        }

    # --- background work ----------------------------------------------------------------------------------------

    def retry_event_source(self) -> SqsEventSource:
        """The retry queue delivering to the retry_dlq function, as the event source mapping does in AWS."""
        return SqsEventSource(
            self.client("sqs"),
            self.resources.retry_queue_url,
            lambda event: self.invoke(FunctionName.RETRY_DLQ, event),
        )

    def start_background_jobs(self) -> None:
        """What AWS runs without a request: the retry event source, the outbox relay, reconciliation and the audit
        checkpointer."""
        retries = self.retry_event_source()
        self.every(RETRY_POLL_SECONDS, "retry-queue", retries.poll)
        self.every(OUTBOX_RELAY_SECONDS, "outbox-relay", lambda: self.invoke(FunctionName.OUTBOX_RELAY, {}))
        self.every(RECONCILE_SECONDS, "reconcile", lambda: self.invoke(FunctionName.RECONCILE, {}))
        self.every(AUDIT_CHECKPOINT_SECONDS, "audit-checkpoint", lambda: self.invoke(FunctionName.AUDIT_CHECKPOINT, {}))

    # --- running ------------------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:<port> of the running API."""
        if self._server is None:
            raise RuntimeError("the local stack is not running")
        return f"http://{self.host}:{self._server.port}"

    @property
    def resources(self) -> LocalResources:
        if self._resources is None:
            raise RuntimeError("the local stack is not running")
        return self._resources

    @property
    def functions(self) -> LocalFunctions:
        if self._functions is None:
            raise RuntimeError("the local stack is not running")
        return self._functions

    def invoke(self, function: FunctionName, event: dict[str, Any]) -> Any:
        """Invoke a function directly (as a schedule or queue would) and return its result."""
        return self.functions.invoke(function, event)

    def every(self, seconds: float, name: str, fn: Callable[[], object]) -> PeriodicJob:
        """Run `fn` every `seconds` until the stack stops (or the returned job is cancelled).

        Runs of one job never overlap; the first comes one interval after the start; a failing run is logged and the
        next one still happens. Jobs registered before start() begin when the stack is up.
        """
        job = PeriodicJob(name, seconds, fn)
        self._jobs.append(job)
        if self._started:
            job.start()
        return job
