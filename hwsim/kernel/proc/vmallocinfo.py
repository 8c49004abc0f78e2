"""/proc/vmallocinfo (mm/vmalloc.c ``s_show``): the busy vmap areas and their ``VM_*`` flags."""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from ...units import PAGE_SIZE
from .config import ProcConfig

# include/linux/vmalloc.h
VM_IOREMAP = 0x00000001
VM_ALLOC = 0x00000002
VM_MAP = 0x00000004
VM_USERMAP = 0x00000008
VM_DMA_COHERENT = 0x00000010
VM_UNINITIALIZED = 0x00000020
VM_NO_GUARD = 0x00000040


@attrs.frozen(kw_only=True)
class VmallocInfoRow:
    """One ``vm_struct`` as /proc/vmallocinfo shows it.

    Attributes:
        addr: first virtual address.
        size: ``vm_struct.size`` in bytes, the guard page included (vmalloc(4096) shows 8192).
        caller: the caller as ``%pS`` prints it (``"some_driver_init+0x1c/0x80 [mod]"``).
        nr_pages: pages mapped (``pages=``; ioremap and vmap areas have none).
        phys_addr: the physical address of an ioremap (``phys=``), 0 for none.
        flags: ``VM_*`` bits: ioremap, vmalloc, vmap, user, dma-coherent.
        vpages: the ``pages[]`` array itself was vmalloc'ed; ``None`` computes it as the
            kernel decides, ``nr_pages * sizeof(struct page *) > PAGE_SIZE``.
        vm_map_ram: a ``vm_map_ram()`` area (no vm_struct): printed as ``vm_map_ram``.
    """

    addr: int
    size: int
    caller: str | None = None
    nr_pages: int = 0
    phys_addr: int = 0
    flags: int = 0
    vpages: bool | None = None
    vm_map_ram: bool = False


def render_vmallocinfo(
    areas: Iterable[VmallocInfoRow],
    config: ProcConfig | None = None,
    *,
    unpurged: Iterable[tuple[int, int]] = (),
) -> str:
    """/proc/vmallocinfo: the busy vmap areas sorted by address (``vmap_area_list``).

    Addresses print as root sees them with Ubuntu's ``kptr_restrict=1`` (``%pK`` with
    CAP_SYSLOG: the real value, zero-padded to the pointer width). ``unpurged`` lists
    lazily freed ``(start, end)`` ranges that ``show_purge_info()`` prints after the last area.
    """
    config = config or ProcConfig()
    width = config.pointer_digits
    ptr_size = width // 2
    rows = sorted(areas, key=lambda a: a.addr)
    out: list[str] = []
    for a in rows:
        head = f"0x{a.addr:0{width}x}-0x{a.addr + a.size:0{width}x} {a.size:7d}"
        if a.vm_map_ram:
            out.append(f"{head} vm_map_ram\n")
            continue
        parts = [head]
        if a.caller:
            parts.append(f" {a.caller}")
        if a.nr_pages:
            parts.append(f" pages={a.nr_pages}")
        if a.phys_addr:
            parts.append(f" phys=0x{a.phys_addr:0{config.phys_addr_digits}x}")
        for bit, word in (
            (VM_IOREMAP, " ioremap"),
            (VM_ALLOC, " vmalloc"),
            (VM_MAP, " vmap"),
            (VM_USERMAP, " user"),
            (VM_DMA_COHERENT, " dma-coherent"),
        ):
            if a.flags & bit:
                parts.append(word)
        vpages = a.vpages
        if vpages is None:
            vpages = bool(a.flags & VM_ALLOC) and a.nr_pages * ptr_size > PAGE_SIZE
        if vpages:
            parts.append(" vpages")
        if config.numa and a.nr_pages and not a.flags & VM_UNINITIALIZED:
            parts.append(f" N0={a.nr_pages}")  # show_numa_info(): one node
        out.append("".join(parts) + "\n")
    if rows:
        for start, end in unpurged:
            out.append(f"0x{start:0{width}x}-0x{end:0{width}x} {end - start:7d} unpurged vm_area\n")
    return "".join(out)
