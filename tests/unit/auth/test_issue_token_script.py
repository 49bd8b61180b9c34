"""scripts/issue_token.py (`make token`): the SCOPE option becomes the token's scope claim."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest

from billing.auth.tokens import LOCAL_TOKEN_SETTINGS, verify_token
from billing.paths import REPO_ROOT


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_issue_token_script", REPO_ROOT / "scripts" / "issue_token.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scope_option_gives_the_token_its_scopes(capsys: pytest.CaptureFixture[str]) -> None:
    assert _script().main(["--sub", "ann", "--scope", "auditor billing:read"]) == 0
    principal = verify_token(capsys.readouterr().out.strip(), LOCAL_TOKEN_SETTINGS)
    assert (principal.subject, principal.scopes) == ("ann", frozenset({"auditor", "billing:read"}))


def test_without_scope_the_token_has_none(capsys: pytest.CaptureFixture[str]) -> None:
    assert _script().main([]) == 0
    assert verify_token(capsys.readouterr().out.strip(), LOCAL_TOKEN_SETTINGS).scopes == frozenset()


def test_an_invalid_scope_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as caught:
        _script().main(["--scope", 'bad"scope'])
    assert caught.value.code == 2
