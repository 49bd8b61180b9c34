"""Expected fee bands: per tenant, provider, payment method and currency, what an item's fees may be.

A band is `fixed + gross x [min, max] basis points`, in minor units of the currency (billing.settlement_fee_bands,
sql/20261217_billing_settlement_fee_bands.sql). No band means no check: the engine has no default pricing to hold a
tenant's contract against. A band for payment method "*" covers every method of the provider that has no band of
its own. Bounds are computed in integers: the low bound rounded down, the high bound up, so an exact fee is
never out of range by rounding.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from uuid import UUID

from billing.domain.money import Money

ANY_METHOD: Final = "*"
_BASIS: Final = 10_000


@dataclass(frozen=True, slots=True)
class FeeBand:
    tenant_id: UUID
    provider: str
    payment_method: str
    currency: str
    min_basis_points: int
    max_basis_points: int
    fixed: int  # minor units of currency

    def __post_init__(self) -> None:
        if not 0 <= self.min_basis_points <= self.max_basis_points:
            raise ValueError("a fee band needs 0 <= min_basis_points <= max_basis_points")
        if self.fixed < 0:
            raise ValueError("a fee band's fixed part is not negative")

    def bounds(self, gross: int) -> tuple[int, int]:
        """The lowest and highest fee expected on an item of `gross` minor units (its magnitude)."""
        gross = abs(gross)
        low = self.fixed + gross * self.min_basis_points // _BASIS
        high = self.fixed + -(-gross * self.max_basis_points // _BASIS)
        return low, high

    def describe(self) -> str:
        fixed = f" + {Money(self.fixed, self.currency).format()}" if self.fixed else ""
        return f"{self.payment_method} band {self.min_basis_points}-{self.max_basis_points} bp{fixed}"


class FeeBands:
    """A provider's bands by (tenant, payment method, currency); small (a handful per tenant), loaded once a run."""

    def __init__(self, bands: Iterable[FeeBand] = ()) -> None:
        # By the tenant id's integer first (hashing a UUID runs Python code; its int hashes in C), then by payment
        # method and currency: this is asked once for every settled item of a file.
        self._by_tenant: dict[int, dict[tuple[str, str], FeeBand]] = {}
        for band in bands:
            self._by_tenant.setdefault(band.tenant_id.int, {})[(band.payment_method, band.currency)] = band

    def __len__(self) -> int:
        return sum(len(bands) for bands in self._by_tenant.values())

    def band_for(self, tenant_id: UUID, payment_method: str | None, currency: str) -> FeeBand | None:
        bands = self._by_tenant.get(tenant_id.int)
        if bands is None:
            return None
        if payment_method is not None:
            band = bands.get((payment_method, currency))
            if band is not None:
                return band
        return bands.get((ANY_METHOD, currency))
