"""/proc/buddyinfo and /proc/pagetypeinfo (mm/vmstat.c): the buddy allocator's free lists."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..zones import NR_PAGE_ORDERS, PAGEBLOCK_NR_PAGES, PAGEBLOCK_ORDER, Zone
from .config import ProcConfig

if TYPE_CHECKING:
    from ..buddy import BuddyAllocator


def render_buddyinfo(zones: Iterable[Zone]) -> str:
    """/proc/buddyinfo: free blocks per order for each populated zone of node 0.

    ``"Node %d, zone %8s "`` then ``"%6lu "`` for each of the 11 orders, then a newline.

    Args:
        zones: the zones of node 0 in zone order (``BuddyAllocator.zones``); empty zones are
            skipped, as ``walk_zones_in_node(..., assert_populated=true, ...)`` does.
    """
    lines = []
    for zone in zones:
        if not zone.populated:
            continue
        counts = "".join(f"{n:6d} " for n in zone.nr_free)
        lines.append(f"Node 0, zone {zone.name:>8s} {counts}\n")
    return "".join(lines)


def render_pagetypeinfo(buddy: BuddyAllocator, config: ProcConfig | None = None) -> str:
    """/proc/pagetypeinfo: free blocks per migratetype and order, and pageblocks per type.

    Migratetypes the model lacks (HighAtomic, CMA, Isolate) print zeros; the "Number of mixed
    blocks" table needs CONFIG_PAGE_OWNER with page_owner=on and is not printed, as on a
    default boot.
    """
    config = config or ProcConfig.for_arch(buddy.arch)
    names = config.migratetype_names
    zones = [z for z in buddy.zones if z.populated]
    out = [
        f"Page block order: {PAGEBLOCK_ORDER}\n",
        f"Pages per block:  {PAGEBLOCK_NR_PAGES}\n",
        "\n",
        f"{'Free pages count per migrate type at order':<43s} ",
        "".join(f"{order:6d} " for order in range(NR_PAGE_ORDERS)),
        "\n",
    ]
    modelled = len(buddy.zones[0].free_area[0])
    for zone in zones:
        for mt, name in enumerate(names):
            counts = (
                len(zone.free_area[order][mt]) if mt < modelled else 0
                for order in range(NR_PAGE_ORDERS)
            )
            row = "".join(f"{n:6d} " for n in counts)
            out.append(f"Node {0:4d}, zone {zone.name:>8s}, type {name:>12s} {row}\n")
    out.append(f"\n{'Number of blocks type ':<23s}")
    out.append("".join(f"{name:>12s} " for name in names))
    out.append("\n")
    for zone in zones:
        count = [0] * len(names)
        for pfn in range(zone.start_pfn, zone.end_pfn, PAGEBLOCK_NR_PAGES):
            count[buddy.pageblock_mt[pfn >> PAGEBLOCK_ORDER]] += 1
        out.append(f"Node 0, zone {zone.name:>8s} ")
        out.append("".join(f"{n:12d} " for n in count))
        out.append("\n")
    return "".join(out)
