"""Static facts about EC2 instance types: the local price table and the vCPU quota families."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

# On-demand Linux $/h in us-east-1, as gathered in May 2026 (../shared/reference/providers.md
# 2.3, marked UNCONFIRMED there).  Used for every region: a pool's `price_hourly_usd`
# overrides it (the controller applies that), and spot machines are priced at this
# on-demand ceiling so budgets stay conservative.
PRICE_TABLE: Mapping[str, float] = {
    "g5.xlarge": 1.006,
    "g5.12xlarge": 5.672,
    "g6.xlarge": 0.8048,
    "g6e.xlarge": 1.861,
    "p4d.24xlarge": 21.96,
    "p5.48xlarge": 55.04,
}


@dataclass(frozen=True)
class QuotaFamily:
    name: str
    on_demand: str  # Service Quotas codes (vCPUs) for running instances of the family
    spot: str

    def code(self, market: str) -> str:
        return self.spot if market == "spot" else self.on_demand


_G_VT = QuotaFamily("G and VT", "L-DB2E81BA", "L-3819A6DF")
_P = QuotaFamily("P", "L-417A185B", "L-7212CCBC")
_STANDARD = QuotaFamily("Standard (A, C, D, H, I, M, R, T, Z)", "L-1216C47A", "L-34B43A08")
_INF = QuotaFamily("Inf", "L-1945791B", "L-B5D1601B")
_X = QuotaFamily("X", "L-7295265B", "L-E3A00192")
_TRN = QuotaFamily("Trn", "L-2C3B7624", "L-5480EFD2")
# instance-type prefix (letters before the generation digit) → its vCPU quota family
QUOTA_FAMILIES: Mapping[str, QuotaFamily] = {
    "g": _G_VT, "vt": _G_VT, "p": _P, "inf": _INF, "x": _X, "trn": _TRN,
    **{letter: _STANDARD for letter in ("a", "c", "d", "h", "i", "m", "r", "t", "z")},
}


def quota_family(instance_type: str) -> QuotaFamily | None:
    match = re.match(r"([a-z]+?)\d", instance_type)
    return QUOTA_FAMILIES.get(match.group(1)) if match else None
