"""Node 0's zones as the kernel lists them, empty ones included, with their watermarks,
lowmem reserves and the reserve totals that MemAvailable subtracts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from ..zones import Zone
from .config import ProcConfig

if TYPE_CHECKING:
    from ..buddy import BuddyAllocator


@attrs.frozen
class _KernelZone:
    """One entry of ``pgdat->node_zones[]``: a modelled zone, or an empty one the model lacks."""

    name: str
    zone: Zone | None  # None: ZONE_MOVABLE/ZONE_DEVICE, always empty in hwsim


def _kernel_zones(buddy: BuddyAllocator, config: ProcConfig) -> list[_KernelZone]:
    by_name = {z.name: z for z in buddy.zones}
    return [_KernelZone(name, by_name.get(name)) for name in config.zone_names]


def _watermarks(kz: _KernelZone) -> tuple[int, int, int, int]:
    """(min, low, high, promo). ``promo = high + tmp`` where ``tmp = high - low``."""
    if kz.zone is None:
        # __setup_per_zone_wmarks() also runs for empty zones: ZONE_MOVABLE's min is clamped
        # to SWAP_CLUSTER_MAX (32) and its distances are 0; ZONE_DEVICE's are all 0.
        value = 32 if kz.name == "Movable" else 0
        return value, value, value, value
    wmin, low, high = kz.zone.watermark
    return wmin, low, high, high + (high - low)


def _protection(kzones: list[_KernelZone], i: int) -> list[int]:
    """``zone->lowmem_reserve[]`` over the kernel's zone list (zoneinfo "protection")."""
    zone = kzones[i].zone
    out = [0] * len(kzones)
    if zone is None:
        return out
    value = 0
    for j in range(i + 1, len(kzones)):
        upper = kzones[j].zone
        if upper is not None:
            value = zone.lowmem_reserve[upper.index]
        # an empty zone the model lacks adds no managed pages: the reserve carries over
        out[j] = value
    return out


def totalreserve_pages(buddy: BuddyAllocator) -> int:
    """``calculate_totalreserve_pages()``: per zone, the largest lowmem_reserve plus the high
    watermark, capped at the zone's managed pages."""
    total = 0
    for zone in buddy.zones:
        reserve = max(zone.lowmem_reserve, default=0) + zone.watermark[2]
        total += min(reserve, zone.managed_pages)
    return total


def low_wmark_pages(buddy: BuddyAllocator, config: ProcConfig | None = None) -> int:
    """The sum of every zone's low watermark, as ``si_mem_available()`` adds it up
    (``for_each_zone`` includes empty zones: an empty ZONE_MOVABLE contributes 32)."""
    config = config or ProcConfig.for_arch(buddy.arch)
    return sum(_watermarks(kz)[1] for kz in _kernel_zones(buddy, config))
