"""An Adyen account's credentials: the API key of a web service user and the merchant account it charges on."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True, slots=True)
class AdyenCredentials:
    """One Adyen account as the adapter uses it. repr shows the merchant account, never the key."""

    api_key: str = field(repr=False)
    merchant_account: str

    def __post_init__(self) -> None:
        if not self.api_key or not self.merchant_account:
            raise ValueError("Adyen credentials need an API key and a merchant account")


# None asks for the platform account's; a tenant id for that tenant's override, else the platform's
# (billing.providers.credentials.ProviderCredentialSource.for_tenant has this shape).
AdyenCredentialsSource = Callable[[UUID | None], AdyenCredentials]


class _AdyenCredentialFields(BaseModel):
    """The fields of one entry of the adyen credentials secret."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    api_key: str = Field(min_length=1)
    merchant_account: str = Field(min_length=1)


def parse_adyen_credentials(fields: Mapping[str, Any]) -> AdyenCredentials:
    """One entry of the credentials secret: {"api_key", "merchant_account"}. Raises ValidationError if malformed."""
    parsed = _AdyenCredentialFields.model_validate(dict(fields))
    return AdyenCredentials(api_key=parsed.api_key, merchant_account=parsed.merchant_account)
