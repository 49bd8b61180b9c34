"""Payment provider API credentials from Secrets Manager: one platform account per provider, optional tenant overrides.

Each provider has one secret, billing/provider/<provider> (billing.resource_names.provider_secret_name); a function
that calls providers finds its ARN in <PROVIDER>_CREDENTIALS_SECRET_ID. The value:

    {"platform": {<fields>}, "tenants": {"<tenant uuid>": {<fields>}}}

The fields are the provider's own (Stripe: api_key; Adyen: api_key, merchant_account), turned into its credentials
type by a `parse` callable (stripe_credentials and adyen_credentials below build the typed sources). A tenant listed
under "tenants" is charged on its own account, every other tenant on the platform's.

The secret is read on first use, not at import, and kept, validated, for max_age_seconds: an operator rotates a key
by putting a new value, and every warm container uses it within that time, without a deploy. The whole document is
checked each time it is read, so a broken entry fails every charge at once instead of surfacing the day that tenant next
charges. Errors name the secret and the offending field, never a value: the value is the credential.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from billing.resource_names import ENV_PROVIDER_CREDENTIAL_SECRET_IDS, PROVIDERS_WITH_CREDENTIALS

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.parameters import SecretsProvider

    from billing.providers.adyen.credentials import AdyenCredentials
    from billing.providers.stripe.clients import StripeCredentials

# How stale a rotated key may be in a warm container. A provider keeps the old key valid while both are in use
# (Stripe's roll with an expiry, a second Adyen API key), so rotation is: add the new key, put it here, wait this
# long, revoke the old one.
DEFAULT_MAX_AGE_SECONDS: Final = 300
# At most this many problems in one error message: enough to fix a document, short enough to read in a log line.
_MAX_REPORTED_PROBLEMS: Final = 10
# What of an error's location may be shown: field names (lower-case words; provider keys always carry digits or
# capitals) and tenant ids. Anything else, e.g. an unexpected key that may be a pasted credential, is redacted.
_FIELD_NAME: Final = re.compile(r"[a-z][a-z_]{0,39}")

CredentialsT = TypeVar("CredentialsT")
Clock = Callable[[], float]


class ProviderCredentialsMisconfigured(RuntimeError):
    """A provider's credentials secret is malformed, or the variable naming it unset: a deployment fault.

    The message names the secret and what is wrong with it, never anything it holds. (A secret that cannot be read
    at all raises Powertools' GetParameterError.)
    """


class _CredentialDocument(BaseModel):
    """The secret's outer shape; each entry's fields are the provider's `parse` callable's business."""

    # hide_input_in_errors: should a ValidationError escape after all, its text still quotes nothing of the secret.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    platform: dict[str, Any]
    tenants: dict[UUID, dict[str, Any]] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True, repr=False)
class _Loaded(Generic[CredentialsT]):
    """One validated read of the secret and when it goes stale; repr=False: it holds the credentials."""

    platform: CredentialsT
    tenants: Mapping[UUID, CredentialsT]
    expires_at: float


def _safe_part(part: int | str) -> str:
    # "[key]" is pydantic's marker for a problem with a mapping's key rather than its value.
    if isinstance(part, int) or part == "[key]" or _FIELD_NAME.fullmatch(part):
        return str(part)
    try:
        return str(UUID(part))
    except ValueError:
        return "<redacted>"


def _problems(error: ValidationError, prefix: tuple[str, ...] = ()) -> str:
    """Where and what (pydantic's error type), without the input: pydantic's own message would echo the value."""
    problems = [
        f"{'.'.join((*prefix, *(_safe_part(p) for p in detail['loc']))) or '<document>'}: {detail['type']}"
        for detail in error.errors(include_url=False, include_context=False, include_input=False)
    ]
    shown = problems[:_MAX_REPORTED_PROBLEMS]
    if len(problems) > len(shown):
        shown.append(f"{len(problems) - len(shown)} more")
    return "; ".join(shown)


def credential_secret_id(provider: str, environ: Mapping[str, str]) -> str:
    """The ARN of a provider's credentials secret, from <PROVIDER>_CREDENTIALS_SECRET_ID; unset: a deployment fault."""
    if provider not in ENV_PROVIDER_CREDENTIAL_SECRET_IDS:
        raise ValueError(f"no credentials for provider {provider!r}")
    variable = ENV_PROVIDER_CREDENTIAL_SECRET_IDS[provider]
    secret_id = environ.get(variable, "")
    if not secret_id:
        raise ProviderCredentialsMisconfigured(
            f"{variable} is not set: this function was not given {provider} credentials"
        )
    return secret_id


def credential_secret_value(
    platform: Mapping[str, str], tenants: Mapping[UUID, Mapping[str, str]] | None = None
) -> str:
    """The secret's JSON, for seeding (local stack, tests) and for operators' tooling."""
    document = {"platform": dict(platform), "tenants": {str(t): dict(f) for t, f in (tenants or {}).items()}}
    return json.dumps(document)


class ProviderCredentialSource(Generic[CredentialsT]):
    """A provider's credentials per tenant, read from Secrets Manager and cached, validated, for a bounded time.

    Powertools' SecretsProvider does the reading (its own cache is bypassed); the cache here holds what `parse`
    made of the value, on an injectable monotonic clock, so staleness is bounded by max_age_seconds exactly.
    """

    def __init__(
        self,
        provider: str,
        secret_id: str,
        parse: Callable[[Mapping[str, Any]], CredentialsT],
        *,
        max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
        secrets: SecretsProvider | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        if provider not in PROVIDERS_WITH_CREDENTIALS:
            raise ValueError(f"no credentials for provider {provider!r}")
        if not secret_id:
            raise ValueError("secret_id must name a secret")
        if max_age_seconds < 0:
            raise ValueError("max_age_seconds must be >= 0")
        self.provider = provider
        self.secret_id = secret_id
        self.max_age_seconds = max_age_seconds
        self._parse = parse
        self._secrets = secrets
        self._clock = clock
        self._loaded: _Loaded[CredentialsT] | None = None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(provider={self.provider!r}, secret_id={self.secret_id!r}, "
            f"max_age_seconds={self.max_age_seconds!r})"
        )

    def for_tenant(self, tenant_id: UUID | None) -> CredentialsT:
        """The tenant's own credentials if the secret lists it, else the platform's; None asks for the platform's.

        Raises ProviderCredentialsMisconfigured for a malformed secret and Powertools' GetParameterError when it
        cannot be read (missing, not granted, Secrets Manager unreachable): either way nothing was sent to the provider.
        """
        loaded = self._current()
        if tenant_id is not None and tenant_id in loaded.tenants:
            return loaded.tenants[tenant_id]
        return loaded.platform

    def _current(self) -> _Loaded[CredentialsT]:
        loaded = self._loaded
        now = self._clock()
        if loaded is None or now >= loaded.expires_at:
            loaded = self._read(now)
            self._loaded = loaded
        return loaded

    def _read(self, now: float) -> _Loaded[CredentialsT]:
        if self._secrets is None:
            # Here, not at import: the boto3 client costs cold-start time in functions that may never charge.
            from aws_lambda_powertools.utilities.parameters import SecretsProvider

            self._secrets = SecretsProvider()
        # max_age=0: Powertools keeps no copy of its own, so the only cache is this one, with its clock.
        value = self._secrets.get(self.secret_id, max_age=0)
        if not isinstance(value, str | bytes):
            raise ProviderCredentialsMisconfigured(f"secret {self.secret_id} has no string value")
        problems: str | None = None
        try:
            document = _CredentialDocument.model_validate_json(value)
        except ValidationError as exc:
            problems = _problems(exc)
        # Raised outside the except clause, so no traceback carries the ValidationError, which quotes the input.
        if problems is not None:
            raise ProviderCredentialsMisconfigured(f"secret {self.secret_id} is malformed: {problems}")
        return _Loaded(
            platform=self._entry(("platform",), document.platform),
            tenants={
                tenant: self._entry(("tenants", str(tenant)), fields) for tenant, fields in document.tenants.items()
            },
            expires_at=now + self.max_age_seconds,
        )

    def _entry(self, where: tuple[str, ...], fields: Mapping[str, Any]) -> CredentialsT:
        problems: str
        try:
            return self._parse(fields)
        except ValidationError as exc:
            problems = _problems(exc, where)
        except Exception as exc:
            # Only the type: a parser's own message may quote what it was given.
            problems = f"{'.'.join(where)}: {type(exc).__name__}"
        raise ProviderCredentialsMisconfigured(f"secret {self.secret_id} is malformed: {problems}")


class _StripeCredentialFields(BaseModel):
    """The fields of one entry of the stripe credentials secret."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    api_key: str = Field(min_length=1)


def parse_stripe_credentials(fields: Mapping[str, Any]) -> StripeCredentials:
    """One entry of the stripe credentials secret ({"api_key"}); pydantic's ValidationError if malformed."""
    from billing.providers.stripe.clients import StripeCredentials

    return StripeCredentials(api_key=_StripeCredentialFields.model_validate(dict(fields)).api_key)


# The typed sources. The provider modules are imported on first call: they import their SDKs, which a function
# that never charges that provider should not pay for at cold start.


def stripe_credentials(
    secret_id: str,
    *,
    max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
    secrets: SecretsProvider | None = None,
    clock: Clock = time.monotonic,
) -> ProviderCredentialSource[StripeCredentials]:
    """Stripe credentials per tenant from the secret `secret_id` (STRIPE_CREDENTIALS_SECRET_ID in AWS)."""
    return ProviderCredentialSource(
        "stripe", secret_id, parse_stripe_credentials, max_age_seconds=max_age_seconds, secrets=secrets, clock=clock
    )


def adyen_credentials(
    secret_id: str,
    *,
    max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
    secrets: SecretsProvider | None = None,
    clock: Clock = time.monotonic,
) -> ProviderCredentialSource[AdyenCredentials]:
    """Adyen credentials per tenant from the secret `secret_id` (ADYEN_CREDENTIALS_SECRET_ID in AWS)."""
    from billing.providers.adyen.credentials import parse_adyen_credentials

    return ProviderCredentialSource(
        "adyen", secret_id, parse_adyen_credentials, max_age_seconds=max_age_seconds, secrets=secrets, clock=clock
    )
