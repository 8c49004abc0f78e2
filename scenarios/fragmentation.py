"""Fragmentation: how the buddy allocator's high-order free lists drain as memory ages.

What it teaches: physical memory fragments. A machine with plenty of free memory can still
fail a physically contiguous allocation, because no free block of the needed order is left:
the pages are free, but scattered. kmalloc of more than 8 KiB needs such a block (order >= 4
for 64 KiB); vmalloc does not, it stitches single pages together in virtual space. That is
the reason drivers use vmalloc/kvmalloc for big buffers that need not be physically
contiguous — and why a DMA buffer without an IOMMU cannot come from vmalloc.

The workload ages a 64 MiB machine round by round: each round allocates up to a fill level
that creeps up from 30 % to 97 % of memory — movable pages (page cache / anonymous memory
stand-ins, order 0-1), unmovable kernel objects (kmalloc of mixed sizes) and a few order-2/3
kernel buffers — then frees a random share of everything live (kernel objects live longer).
After every round it reads /proc/buddyinfo and probes kmalloc and vmalloc of 64 KiB, 128
KiB, ... 4 MiB (orders 4 to 10), freeing each probe at once.

What to expect (seed 1, 64 MiB): at first every order has blocks and every probe succeeds.
The counts of orders 10, 9, 8, ... fall round by round while orders 0-3 fill up with
thousands of scattered blocks. kmalloc(4 MiB) (order 10) fails from round ~29 with ~20 MiB
still free, and the failures walk down the orders until kmalloc(64 KiB) (order 4) fails
around round 37 with ~16 MiB free — "page allocation failure: order:4" — while vmalloc of
every size goes on succeeding. ``--plot FILE`` draws the free lists over time.

Run: ``hwsim run fragmentation --plot fragmentation.png``
"""

from __future__ import annotations

from typing import Any

import hwsim

CONFIG = hwsim.MachineConfig(ram="64MiB", cpus=2, seed=1, quantum=1_000_000)

ROUNDS = 50
# Probe sizes: kmalloc needs a free block of order 4 (64 KiB) ... 10 (4 MiB) for them.
PROBE_ORDERS = tuple(range(4, 11))


def _nr_free_by_order(buddyinfo: str) -> list[int]:
    """Sum /proc/buddyinfo's per-order block counts over the zones."""
    totals = [0] * (hwsim.MAX_PAGE_ORDER + 1)
    for line in buddyinfo.splitlines():
        counts = [int(x) for x in line.split()[4:]]
        totals = [a + b for a, b in zip(totals, counts, strict=True)]
    return totals


async def _probe(kernel: hwsim.Kernel, size: int) -> tuple[bool, bool]:
    """Can kmalloc, and can vmalloc, get ``size`` bytes right now? (Freed again at once.)"""
    try:
        addr = await kernel.kmalloc(size, gfp=hwsim.GFP_KERNEL | hwsim.GFP_NOWARN)
    except hwsim.OutOfMemory:
        kmalloc_ok = False
    else:
        kmalloc_ok = True
        await kernel.kfree(addr)
    try:
        vaddr = await kernel.vmalloc(size)
    except hwsim.OutOfMemory:
        vmalloc_ok = False
    else:
        vmalloc_ok = True
        await kernel.vfree(vaddr)
    return kmalloc_ok, vmalloc_ok


def _meminfo_kb(meminfo: str, field: str) -> int:
    for line in meminfo.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


async def scenario(machine: hwsim.Machine) -> dict[str, Any]:
    kernel = machine.kernel
    rng = machine.random
    managed = _meminfo_kb(machine.proc.read("meminfo"), "MemTotal") // 4  # pages
    live: list[tuple[str, int, int]] = []  # (kind, address or pfn, order)
    used = 0  # bytes this workload holds
    rows: list[dict[str, Any]] = []
    kmalloc_fails: dict[int, int] = {}  # order -> first round kmalloc of that size failed
    vmalloc_fails: dict[int, int] = {}

    for round_no in range(ROUNDS + 1):
        if round_no:
            # Fill up to a level that creeps up round by round...
            target = int(managed * 4096 * min(0.97, 0.30 + 0.02 * round_no))
            while used < target:
                pick = rng.random()
                try:
                    if pick < 0.80:  # page cache / anonymous memory: movable single pages
                        order = 0 if rng.random() < 0.9 else 1
                        pfn = await kernel.alloc_pages(order, gfp=hwsim.GFP_HIGHUSER_MOVABLE)
                        live.append(("pages", pfn, order))
                        used += 4096 << order
                    elif pick < 0.98:  # kernel objects: unmovable
                        size = rng.choice([64, 192, 512, 1024, 2048, 4096])
                        gfp = hwsim.GFP_KERNEL | hwsim.GFP_NOWARN
                        live.append(("kmalloc", await kernel.kmalloc(size, gfp=gfp), size))
                        used += size
                    else:  # the odd multi-page kernel buffer
                        order = rng.choice([2, 3])
                        gfp = hwsim.GFP_KERNEL | hwsim.GFP_NOWARN
                        live.append(("pages", await kernel.alloc_pages(order, gfp=gfp), order))
                        used += 4096 << order
                except hwsim.OutOfMemory:
                    break
            # ...then free a random share of what is live: holes all over memory.
            survivors = []
            for kind, where, size in live:
                if rng.random() < (0.30 if kind == "pages" else 0.20):
                    if kind == "pages":
                        await kernel.free_pages(where, size)
                        used -= 4096 << size
                    else:
                        await kernel.kfree(where)
                        used -= size
                else:
                    survivors.append((kind, where, size))
            live = survivors
        counts = _nr_free_by_order(machine.proc.read("buddyinfo"))
        probes = {order: await _probe(kernel, 4096 << order) for order in PROBE_ORDERS}
        for order, (kmalloc_ok, vmalloc_ok) in probes.items():
            if not kmalloc_ok:
                kmalloc_fails.setdefault(order, round_no)
            if not vmalloc_ok:
                vmalloc_fails.setdefault(order, round_no)
        free_pages = sum(n << order for order, n in enumerate(counts))
        largest = max((order for order, n in enumerate(counts) if n), default=-1)
        rows.append(
            {
                "round": round_no,
                "free_MiB": round(free_pages * 4096 / (1 << 20), 1),
                "largest_order": largest,
                **{f"o{order}": n for order, n in enumerate(counts)},
                "kmalloc_ok_up_to": max(
                    (
                        f"{4 << o}K" if o < 8 else f"{1 << (o - 8)}M"
                        for o, (ok, _) in probes.items()
                        if ok
                    ),
                    key=lambda text: int(text[:-1]) << (10 if text.endswith("M") else 0),
                    default="-",
                ),
                "vmalloc_all_ok": all(ok for _, ok in probes.values()),
            }
        )

    per_order = [
        {
            "order": order,
            "size": f"{4 << order} KiB",
            "kmalloc_first_failed_round": kmalloc_fails.get(order),
            "free_MiB_then": (
                rows[kmalloc_fails[order]]["free_MiB"] if order in kmalloc_fails else None
            ),
            "vmalloc_first_failed_round": vmalloc_fails.get(order),
        }
        for order in PROBE_ORDERS
    ]
    return {
        "summary": {
            "rounds": ROUNDS,
            "final_free_MiB": rows[-1]["free_MiB"],
            "final_largest_free_order": rows[-1]["largest_order"],
            "order4_kmalloc_first_failed_round": kmalloc_fails.get(4),
            "vmalloc_ever_failed": bool(vmalloc_fails),
        },
        "kmalloc_vs_vmalloc_by_size": per_order,
        "buddyinfo_over_time": rows,
    }


def plot(result: dict[str, Any], path: str) -> None:
    """Top: free blocks per order over the rounds (a heat map of /proc/buddyinfo). Bottom:
    free memory in blocks big enough for a 64 KiB kmalloc (order >= 4) and in smaller
    ones, with the rounds where kmalloc of 64 KiB and of 4 MiB start failing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = result["buddyinfo_over_time"]
    rounds = [r["round"] for r in rows]
    orders = range(hwsim.MAX_PAGE_ORDER + 1)
    counts = np.array([[r[f"o{o}"] for r in rows] for o in orders], dtype=float)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True, layout="constrained")
    image = top.imshow(
        np.log10(counts + 1),
        aspect="auto",
        origin="lower",
        cmap="viridis",
        extent=(rounds[0] - 0.5, rounds[-1] + 0.5, -0.5, hwsim.MAX_PAGE_ORDER + 0.5),
    )
    top.set_ylabel("order")
    top.set_title("Free blocks per order (/proc/buddyinfo, all zones)")
    # One colour bar for both panels keeps their x axes aligned.
    fig.colorbar(image, ax=[top, bottom], label="log10(free blocks + 1)", shrink=0.5, anchor=(0, 1))
    mib = 4096 / (1 << 20)
    small = [sum(r[f"o{o}"] << o for o in range(4)) * mib for r in rows]
    large = [sum(r[f"o{o}"] << o for o in range(4, 11)) * mib for r in rows]
    bottom.stackplot(rounds, large, small, labels=["in blocks of order >= 4", "in orders 0-3"])
    for probe in result["kmalloc_vs_vmalloc_by_size"]:
        when = probe["kmalloc_first_failed_round"]
        if when is not None and probe["order"] in (4, 10):
            for ax in (top, bottom):
                ax.axvline(
                    when,
                    linestyle="--",
                    color="red" if probe["order"] == 4 else "white" if ax is top else "grey",
                )
            bottom.annotate(
                f"kmalloc({probe['size']}) fails",
                (when, max(small) * 1.02),
                rotation=90,
                va="bottom",
                ha="right",
                fontsize="small",
            )
    bottom.set_xlabel("round")
    bottom.set_ylabel("free memory (MiB)")
    bottom.legend(loc="upper right", fontsize="small")
    fig.savefig(path)
    plt.close(fig)
