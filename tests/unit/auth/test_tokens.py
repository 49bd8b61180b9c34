from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import jwt
import pytest

from billing.auth.tokens import (
    ALGORITHM,
    AUDIENCE,
    CLOCK_SKEW,
    DEV_JWT_KEY,
    LOCAL_ISSUER,
    LOCAL_TOKEN_SETTINGS,
    Principal,
    TokenSettings,
    bearer_token,
    issue_token,
    parse_token_settings,
    token_settings_secret_value,
    verify_token,
)
from billing.domain.errors import AuthenticationFailed, BillingError

TENANT = UUID("6f1c2f7e-1111-4222-8333-944444444444")
OTHER_KEY = "another-key-that-is-long-enough-for-hs256!"


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(datetime.now(UTC).timestamp())
    claims: dict[str, Any] = {
        "tenant_id": str(TENANT),
        "sub": "alice",
        "iat": now,
        "exp": now + 300,
        "iss": LOCAL_ISSUER,
        "aud": AUDIENCE,
    }
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


def _signed(claims: dict[str, Any], key: str = DEV_JWT_KEY, algorithm: str = ALGORITHM) -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def _reason(token: str, settings: TokenSettings = LOCAL_TOKEN_SETTINGS) -> str:
    with pytest.raises(AuthenticationFailed) as excinfo:
        verify_token(token, settings)
    return excinfo.value.reason


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


# --- valid tokens ---------------------------------------------------------------------------------------------


def test_verify_issued_token_returns_tenant_and_subject() -> None:
    token = issue_token(LOCAL_TOKEN_SETTINGS, TENANT, "alice")

    assert verify_token(token, LOCAL_TOKEN_SETTINGS) == Principal(tenant_id=TENANT, subject="alice")


def test_issue_token_carries_the_documented_claims() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)

    token = issue_token(LOCAL_TOKEN_SETTINGS, TENANT, "alice", ttl=timedelta(minutes=5), now=now)

    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert header["alg"] == "HS256"
    assert claims == {
        "tenant_id": str(TENANT),
        "sub": "alice",
        "iat": int(now.timestamp()),
        "exp": int(now.timestamp()) + 300,
        "iss": "billing-local",
        "aud": "billing-api",
    }


def test_verify_token_expired_within_clock_skew_is_accepted() -> None:
    issued = datetime.now(UTC) - timedelta(minutes=10)
    token = issue_token(LOCAL_TOKEN_SETTINGS, TENANT, "alice", ttl=timedelta(minutes=10) - CLOCK_SKEW / 2, now=issued)

    assert verify_token(token, LOCAL_TOKEN_SETTINGS).tenant_id == TENANT


def test_verify_token_signed_with_an_older_listed_key_is_accepted_during_rotation() -> None:
    old = TokenSettings(LOCAL_ISSUER, (OTHER_KEY,))
    rotated = TokenSettings(LOCAL_ISSUER, (DEV_JWT_KEY, OTHER_KEY))
    token = issue_token(old, TENANT, "alice")

    assert verify_token(token, rotated).subject == "alice"
    assert jwt.decode(issue_token(rotated, TENANT, "bob"), DEV_JWT_KEY, algorithms=["HS256"], audience=AUDIENCE)


def test_verify_token_accepts_an_upper_case_tenant_uuid() -> None:
    token = _signed(_claims(tenant_id=str(TENANT).upper()))

    assert verify_token(token, LOCAL_TOKEN_SETTINGS).tenant_id == TENANT


# --- rejected tokens ------------------------------------------------------------------------------------------


def test_verify_token_expired_is_rejected() -> None:
    issued = datetime.now(UTC) - timedelta(hours=2)
    token = issue_token(LOCAL_TOKEN_SETTINGS, TENANT, "alice", ttl=timedelta(hours=1), now=issued)

    assert _reason(token) == "expired"


def test_verify_token_issued_in_the_future_is_rejected() -> None:
    token = issue_token(LOCAL_TOKEN_SETTINGS, TENANT, "alice", now=datetime.now(UTC) + timedelta(minutes=5))

    assert _reason(token) == "not_yet_valid"


def test_verify_token_signed_with_another_key_is_rejected() -> None:
    token = issue_token(TokenSettings(LOCAL_ISSUER, (OTHER_KEY,)), TENANT, "alice")

    assert _reason(token) == "signature_mismatch"


def test_verify_token_with_alg_none_is_rejected() -> None:
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}."

    assert _reason(unsigned) == "algorithm_not_allowed"


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
@pytest.mark.filterwarnings("ignore:The HMAC key is")  # signing the attacker's token with our key is the point
def test_verify_token_with_another_hmac_algorithm_is_rejected(algorithm: str) -> None:
    token = _signed(_claims(), algorithm=algorithm)

    assert _reason(token) == "algorithm_not_allowed"


def test_verify_token_with_a_tampered_payload_is_rejected() -> None:
    header, _, signature = _signed(_claims()).split(".")
    forged = f"{header}.{_b64(_claims(tenant_id=str(uuid4())))}.{signature}"

    assert _reason(forged) == "signature_mismatch"


@pytest.mark.parametrize("claim", ["tenant_id", "sub", "exp", "iat", "iss", "aud"])
def test_verify_token_missing_a_required_claim_is_rejected(claim: str) -> None:
    token = _signed(_claims(**{claim: None}))

    assert _reason(token) == "missing_claim"


@pytest.mark.parametrize(
    "tenant",
    [
        "not-a-uuid",
        "6f1c2f7e111142228333944444444444",  # no hyphens
        "{6f1c2f7e-1111-4222-8333-944444444444}",
        "urn:uuid:6f1c2f7e-1111-4222-8333-944444444444",
        12345,
        ["6f1c2f7e-1111-4222-8333-944444444444"],
    ],
)
def test_verify_token_with_a_non_uuid_tenant_is_rejected(tenant: object) -> None:
    token = _signed(_claims(tenant_id=tenant))

    assert _reason(token) == "invalid_tenant"


@pytest.mark.parametrize("subject", ["", "x" * 257, 42])
def test_verify_token_with_an_invalid_subject_is_rejected(subject: object) -> None:
    token = _signed(_claims(sub=subject))

    assert _reason(token) == "invalid_subject"


def test_verify_token_for_another_audience_is_rejected() -> None:
    assert _reason(_signed(_claims(aud="another-api"))) == "invalid_audience"


def test_verify_token_from_another_issuer_is_rejected() -> None:
    assert _reason(_signed(_claims(iss="someone-else"))) == "invalid_issuer"


def test_verify_token_checks_the_configured_issuer() -> None:
    settings = TokenSettings("billing-prod", (DEV_JWT_KEY,))

    assert _reason(issue_token(LOCAL_TOKEN_SETTINGS, TENANT, "alice"), settings) == "invalid_issuer"
    assert verify_token(issue_token(settings, TENANT, "alice"), settings).subject == "alice"


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "abc.def"])
def test_verify_token_malformed_is_rejected(token: str) -> None:
    assert _reason(token) == "malformed"


def test_authentication_failed_is_a_billing_error_with_the_unauthenticated_code() -> None:
    error = AuthenticationFailed("expired")

    assert isinstance(error, BillingError)
    assert error.code == "unauthenticated"
    assert error.reason == "expired"


# --- Authorization header -------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["Bearer abc.def.ghi", "bearer abc.def.ghi", "  Bearer   abc.def.ghi  "])
def test_bearer_token_extracts_the_token(header: str) -> None:
    assert bearer_token(header) == "abc.def.ghi"


@pytest.mark.parametrize(("header", "reason"), [(None, "missing_token"), ("", "missing_token")])
def test_bearer_token_missing_header_is_rejected(header: str | None, reason: str) -> None:
    with pytest.raises(AuthenticationFailed) as excinfo:
        bearer_token(header)
    assert excinfo.value.reason == reason


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "abc.def.ghi", "Bearer a b"])
def test_bearer_token_other_schemes_and_shapes_are_rejected(header: str) -> None:
    with pytest.raises(AuthenticationFailed) as excinfo:
        bearer_token(header)
    assert excinfo.value.reason == "malformed_authorization_header"


# --- settings and the secret ----------------------------------------------------------------------------------


def test_token_settings_secret_value_round_trips() -> None:
    settings = TokenSettings("billing", (DEV_JWT_KEY, OTHER_KEY))

    assert parse_token_settings(token_settings_secret_value(settings)) == settings


def test_parse_token_settings_accepts_a_single_generated_key() -> None:
    value = json.dumps({"issuer": "billing", "key": OTHER_KEY}).encode()

    assert parse_token_settings(value) == TokenSettings("billing", (OTHER_KEY,))


@pytest.mark.parametrize(
    "value",
    [
        "not json",
        json.dumps([DEV_JWT_KEY]),
        json.dumps({"keys": [DEV_JWT_KEY]}),
        json.dumps({"issuer": "", "keys": [DEV_JWT_KEY]}),
        json.dumps({"issuer": "billing"}),
        json.dumps({"issuer": "billing", "keys": []}),
        json.dumps({"issuer": "billing", "keys": [""]}),
        json.dumps({"issuer": "billing", "keys": "not-a-list-of-keys-but-a-long-string"}),
        json.dumps({"issuer": "billing", "keys": ["too-short"]}),
    ],
)
def test_parse_token_settings_rejects_malformed_secrets(value: str) -> None:
    with pytest.raises(ValueError, match=r"JWT secret|at least|issuer"):
        parse_token_settings(value)


def test_token_settings_refuses_keys_shorter_than_256_bits() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        TokenSettings(LOCAL_ISSUER, ("x" * 31,))


def test_issue_token_refuses_an_empty_subject() -> None:
    with pytest.raises(ValueError, match="subject"):
        issue_token(LOCAL_TOKEN_SETTINGS, TENANT, "")


# --- scopes ---------------------------------------------------------------------------------------------------


def test_issued_scopes_are_one_sorted_space_separated_scope_claim_and_verify_back() -> None:
    token = issue_token(LOCAL_TOKEN_SETTINGS, TENANT, "carol", scopes=["billing:read", "auditor"])

    assert jwt.decode(token, options={"verify_signature": False})["scope"] == "auditor billing:read"
    principal = verify_token(token, LOCAL_TOKEN_SETTINGS)
    assert principal.scopes == frozenset({"auditor", "billing:read"})
    assert principal.has_scope("auditor")
    assert not principal.has_scope("admin")


def test_a_token_without_scopes_carries_no_scope_claim_and_has_none() -> None:
    token = issue_token(LOCAL_TOKEN_SETTINGS, TENANT, "alice")

    assert "scope" not in jwt.decode(token, options={"verify_signature": False})
    assert verify_token(token, LOCAL_TOKEN_SETTINGS).scopes == frozenset()


@pytest.mark.parametrize("claim", [{"scp": "auditor reports"}, {"scp": ["auditor", "reports"]}])
def test_the_scp_claim_is_read_as_a_string_or_a_list(claim: dict[str, Any]) -> None:
    principal = verify_token(_signed(_claims(**claim)), LOCAL_TOKEN_SETTINGS)

    assert principal.scopes == frozenset({"auditor", "reports"})


@pytest.mark.parametrize(
    "scope",
    [42, {"auditor": True}, ["auditor", 1], "auditor  double-space", 'quote"d', "back\\slash", "x" * 65, "a " * 33],
)
def test_a_malformed_scope_claim_rejects_the_token(scope: object) -> None:
    assert _reason(_signed(_claims(scope=scope))) == "invalid_scope"


def test_issue_token_refuses_invalid_scopes() -> None:
    with pytest.raises(ValueError, match="scope"):
        issue_token(LOCAL_TOKEN_SETTINGS, TENANT, "alice", scopes=["has space"])
