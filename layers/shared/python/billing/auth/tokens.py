"""Bearer tokens of the billing API: HS256 JWTs naming the tenant and the acting subject.

The Lambda authorizer verifies them in AWS with the settings stored in Secrets Manager (resource_names.JWT_SECRET_NAME);
the local stack verifies them with DEV_JWT_KEY through this same code, so a token that works locally is checked exactly
as it would be in AWS.

The secret's value is a JSON object: {"issuer": "<iss>", "keys": ["<newest>", "<older>", ...]}. The first key signs,
every listed key verifies, so a key is rotated with an overlap window (prepend the new key, wait for the authorizer's
cache to expire, switch the issuer to it, then drop the old one). {"issuer": ..., "key": "<key>"} is accepted for a
single key, which is the shape CDK's generated secrets (secretStringTemplate + generateStringKey) produce.

Scopes: a token may carry `scope` (RFC 8693 / RFC 9068: a space-separated string) or `scp` (the same, or a list, as
some identity providers write it). The authorizer hands them on as one space-separated string; a route that needs
one (the audit API needs `auditor`) checks it. A token without scopes has none, and a malformed scope claim makes
the whole token invalid rather than silently scope-less.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from uuid import UUID

import jwt

from billing.domain.errors import AuthenticationFailed

ALGORITHM: Final = "HS256"
AUDIENCE: Final = "billing-api"
LOCAL_ISSUER: Final = "billing-local"
DEFAULT_TTL: Final = timedelta(hours=1)
# Clocks of the issuer and of Lambda drift a little; more than this and the token is refused.
CLOCK_SKEW: Final = timedelta(seconds=30)
# RFC 7518 §3.2: an HS256 key must be at least as long as the hash output, 256 bits.
MIN_KEY_BYTES: Final = 32
# Subjects end up in principalId, log lines and audit columns: bounded so a token cannot flood them.
MAX_SUBJECT_LENGTH: Final = 256
_REQUIRED_CLAIMS: Final = ("tenant_id", "sub", "iat", "exp", "iss", "aud")
# RFC 6749 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ); bounded like the subject.
_SCOPE_TOKEN: Final = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,64}$")
MAX_SCOPES: Final = 32

# Local development and tests ONLY (the local stack seeds it into moto's billing/auth/jwt). It is public in this
# repository, so anyone can mint tokens with it: it must never be stored in a deployed stack's secret.
DEV_JWT_KEY: Final = "billing-local-dev-jwt-key-NOT-FOR-PRODUCTION"
# The tenant `make token` and the demo use when none is given; "de70" reads as "demo".
DEMO_TENANT_ID: Final = UUID("0000de70-0000-4000-8000-000000000001")
DEMO_SUBJECT: Final = "demo-user"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the tenant whose data the request may touch and the user or system acting for it."""

    tenant_id: UUID
    subject: str
    scopes: frozenset[str] = frozenset()

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


def scopes_of(value: object) -> frozenset[str]:
    """The scopes of a `scope`/`scp` claim or of the authorizer's context value; ValueError if malformed."""
    if value is None:
        return frozenset()
    if isinstance(value, str):
        parts = value.split(" ") if value else []
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        parts = list(value)
    else:
        raise ValueError("scope is a space-separated string")
    if len(parts) > MAX_SCOPES or not all(_SCOPE_TOKEN.fullmatch(p) for p in parts):
        raise ValueError("scope holds invalid scope tokens")
    return frozenset(parts)


def scope_string(scopes: Iterable[str]) -> str:
    """The space-separated form (sorted, so equal sets give equal strings)."""
    return " ".join(sorted(scopes))


@dataclass(frozen=True, slots=True)
class TokenSettings:
    """Who we trust: the expected issuer and the keys (the first signs, all verify)."""

    issuer: str
    keys: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.issuer:
            raise ValueError("issuer must not be empty")
        if not self.keys:
            raise ValueError("at least one signing key is required")
        # Never echo a key in a message: it is the secret.
        if any(len(key.encode()) < MIN_KEY_BYTES for key in self.keys):
            raise ValueError(f"HS256 keys must be at least {MIN_KEY_BYTES} bytes long")


# What the local stack seeds and `make token` signs with.
LOCAL_TOKEN_SETTINGS: Final = TokenSettings(LOCAL_ISSUER, (DEV_JWT_KEY,))


def issue_token(
    settings: TokenSettings,
    tenant_id: UUID,
    subject: str,
    *,
    ttl: timedelta = DEFAULT_TTL,
    now: datetime | None = None,
    scopes: Iterable[str] = (),
) -> str:
    """A token for `subject` acting on `tenant_id`, signed with the first key and valid for `ttl` from `now`;
    `scopes` become its space-separated `scope` claim (none: no claim)."""
    if not subject or len(subject) > MAX_SUBJECT_LENGTH:
        raise ValueError(f"subject must be 1..{MAX_SUBJECT_LENGTH} characters")
    granted = scopes_of(list(scopes))
    issued_at = now or datetime.now(UTC)
    claims = {
        "tenant_id": str(tenant_id),
        "sub": subject,
        "iat": int(issued_at.timestamp()),
        "exp": int((issued_at + ttl).timestamp()),
        "iss": settings.issuer,
        "aud": AUDIENCE,
    }
    if granted:
        claims["scope"] = scope_string(granted)
    return jwt.encode(claims, settings.keys[0], algorithm=ALGORITHM)


# pyjwt's exceptions -> our stable reasons. Order matters: subclasses before their bases.
_REASONS: Final[tuple[tuple[type[jwt.InvalidTokenError], str], ...]] = (
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid"),
    (jwt.InvalidAudienceError, "invalid_audience"),
    (jwt.InvalidIssuerError, "invalid_issuer"),
    (jwt.InvalidIssuedAtError, "invalid_issued_at"),
    (jwt.MissingRequiredClaimError, "missing_claim"),
    (jwt.InvalidAlgorithmError, "algorithm_not_allowed"),
    (jwt.InvalidSignatureError, "signature_mismatch"),
    (jwt.DecodeError, "malformed"),
)


def _reason(exc: jwt.InvalidTokenError) -> str:
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return "invalid"


def _decode(token: str, key: str, issuer: str) -> dict[str, Any]:
    return jwt.decode(
        token,
        key,
        # Fixed, never taken from the token header: this is what refuses `none` and algorithm confusion.
        algorithms=[ALGORITHM],
        audience=AUDIENCE,
        issuer=issuer,
        leeway=CLOCK_SKEW,
        # verify_sub off: _principal checks the subject itself, the same way on every pyjwt version.
        options={"require": list(_REQUIRED_CLAIMS), "strict_aud": True, "verify_sub": False},
    )


def verify_token(token: str, settings: TokenSettings) -> Principal:
    """The principal of a valid token; AuthenticationFailed (with a stable reason) for anything else."""
    claims: dict[str, Any] | None = None
    for key in settings.keys:
        try:
            claims = _decode(token, key, settings.issuer)
            break
        except jwt.InvalidSignatureError:
            continue  # perhaps signed with another of the listed keys (rotation overlap)
        except jwt.InvalidTokenError as exc:
            raise AuthenticationFailed(_reason(exc)) from None
    if claims is None:
        raise AuthenticationFailed("signature_mismatch")
    return _principal(claims)


def _principal(claims: Mapping[str, Any]) -> Principal:
    tenant, subject = claims["tenant_id"], claims["sub"]
    if not isinstance(tenant, str):
        raise AuthenticationFailed("invalid_tenant")
    try:
        tenant_id = UUID(tenant)
    except ValueError:
        raise AuthenticationFailed("invalid_tenant") from None
    # UUID() also accepts braces, urn: prefixes and missing hyphens; only the canonical spelling is a tenant id.
    if str(tenant_id) != tenant.lower():
        raise AuthenticationFailed("invalid_tenant")
    if not isinstance(subject, str) or not subject or len(subject) > MAX_SUBJECT_LENGTH:
        raise AuthenticationFailed("invalid_subject")
    try:
        scopes = scopes_of(claims.get("scope")) | scopes_of(claims.get("scp"))
    except ValueError:
        raise AuthenticationFailed("invalid_scope") from None
    return Principal(tenant_id=tenant_id, subject=subject, scopes=scopes)


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header value; AuthenticationFailed if there is none."""
    if not authorization:
        raise AuthenticationFailed("missing_token")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise AuthenticationFailed("malformed_authorization_header")
    return token


def parse_token_settings(value: str | bytes) -> TokenSettings:
    """TokenSettings from the Secrets Manager value (see the module docstring); ValueError if malformed."""
    text = value.decode("utf-8") if isinstance(value, bytes) else value
    try:
        document = json.loads(text)
    except ValueError:
        raise ValueError("JWT secret is not valid JSON") from None
    if not isinstance(document, dict):
        raise ValueError('JWT secret must be a JSON object: {"issuer": ..., "keys": [...]}')
    issuer = document.get("issuer")
    keys = document.get("keys", [document["key"]] if "key" in document else None)
    if not isinstance(issuer, str) or not issuer:
        raise ValueError("JWT secret has no issuer")
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) and k for k in keys):
        raise ValueError('JWT secret needs "keys": a non-empty list of non-empty strings (or a single "key")')
    return TokenSettings(issuer=issuer, keys=tuple(keys))


def token_settings_secret_value(settings: TokenSettings) -> str:
    """The Secrets Manager value for `settings`; the inverse of parse_token_settings."""
    return json.dumps({"issuer": settings.issuer, "keys": list(settings.keys)})


def claimed_identity(authorization: str | None) -> tuple[str | None, UUID | None]:
    """The subject and tenant a rejected token *claims*, unverified, for the audit trail only; None where the
    header holds no parseable token or the claim is not a plausible subject or canonical tenant id."""
    try:
        claims = jwt.decode(bearer_token(authorization), options={"verify_signature": False})
    except (AuthenticationFailed, jwt.InvalidTokenError):
        return None, None
    subject, tenant = claims.get("sub"), claims.get("tenant_id")
    # Bounded like an audit actor (billing.audit.events.MAX_ACTOR_LENGTH) and printable: the claim is the caller's.
    claimed_subject = (
        subject if isinstance(subject, str) and 0 < len(subject) <= 200 and subject.isprintable() else None
    )
    claimed_tenant: UUID | None = None
    if isinstance(tenant, str):
        try:
            claimed_tenant = UUID(tenant)
        except ValueError:
            claimed_tenant = None
        if claimed_tenant is not None and str(claimed_tenant) != tenant.lower():
            claimed_tenant = None
    return claimed_subject, claimed_tenant
