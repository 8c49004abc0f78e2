"""Address translation: one address followed through every level, x86_64 and i386.

What it teaches: what the words logical, linear, virtual and physical address mean on x86,
and what the hardware reads to get from one to the next - each table entry really read from
the machine's RAM, where the kernel's page-table code wrote it.

- **x86_64**, 4-level paging: a kmalloc buffer lives in the direct map, which the kernel maps
  with 2 MiB pages, so the walk reads three entries (PGD, PUD, PMD with PSE) and the page
  offset is 21 bits; ``virt_to_phys()`` gets the same answer by arithmetic
  (``addr - PAGE_OFFSET``). A vmalloc buffer is mapped page by page with 4 KiB PTEs: four
  entries read, a 12-bit offset, and ``vmalloc_to_pfn()`` (a walk) is the only way back.
  Each level's index is a 9-bit field of the address (47..39, 38..30, 29..21, 20..12). The
  page after a vmalloc area is its unmapped guard page: touching it is a page fault. With
  no TLB entry every translation costs one memory read per level (the ``*_cycles_*``
  figures, measured on CPU 0 from a cold TLB and cold caches: the TLB lookup plus, on a
  miss, each level's entry read through the L1 and L2 from RAM, 120 cycles each with the
  default latencies; just the lookup on a hit) - why the direct map's large pages matter.
- **i386** (a second, 256 MiB i386 machine booted inside the scenario): before paging there
  is segmentation. A logical address ``selector:offset`` names a descriptor in the GDT -
  here Linux's own GDT (``gdt_page``), written into a page of the machine's RAM and found
  through GDTR's linear address - whose base is added to the offset. Linux's segments are
  flat (base 0, limit 4 GiB), so ``__KERNEL_DS:ptr`` is linear address ``ptr``: the
  offset, the linear address and the "virtual address" a C pointer holds are one number.
  Paging then walks the 2-level tables; the direct map uses 4 MiB pages, so a kmalloc
  address needs ONE entry (a PGD entry with PSE), a vmalloc address two. The one segment
  Linux does not keep flat is the per-CPU segment (``__KERNEL_PERCPU`` in %fs), whose base
  is the CPU's per-CPU area: there the linear address is base + offset. (Here the area is a
  page from the buddy allocator and the variable sits 0x40 into it; in the kernel the base
  is ``per_cpu_offset(cpu)`` and the offset the variable's link-time address.) The checks
  (``i386_segment_checks``: privilege, limit, type) fault with #GP as the CPU would.

What to expect: ``x86_64_kmalloc`` has rows PGD, PUD, PMD and a 2 MiB page whose physical
address equals ``virt_to_phys``; ``x86_64_vmalloc`` has PGD, PUD, PMD, PTE and a 4 KiB page
matching ``vmalloc_to_pfn``; ``x86_64_guard_page_fault`` is the oops of a not-present PTE.
``i386_logical_to_linear`` ends with linear == offset; ``i386_percpu_segment`` ends with
linear == base + offset; ``i386_paging`` is a single PGD entry with PSE mapping a 4 MiB
page. The numbers depend on the seed only through which pages the allocators hand out.

Run it::

    hwsim run address_translation
"""

from __future__ import annotations

from typing import Any

import hwsim
from hwsim.devices.mmu import MmuModel, PageFault
from hwsim.devices.paging import Translation
from hwsim.devices.segmentation import (
    __KERNEL_CS,
    __KERNEL_DS,
    __KERNEL_PERCPU,
    __USER_DS,
    GDT_ENTRY_PNPBIOS_DS,
    GDT_SIZE,
    Segmentation,
    gdt_bytes,
    linux_i386_gdt,
)

# A field inside the kmalloc'd object that we follow (as if ``&obj->field``).
FIELD_OFFSET = 0x48
# The per-CPU variable followed through %fs: its offset in the per-CPU area.
PERCPU_VAR_OFFSET = 0x40


def _size(size: int) -> str:
    return f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"


def _mmu(machine: hwsim.Machine) -> MmuModel:
    """CPU 0's MMU: its walk reads the entries the kernel wrote, through the caches'
    coherent view, without the TLB or any statistics."""
    return machine.mmus[0].model


async def _translation_cycles(machine: hwsim.Machine, addr: int) -> int:
    """What translating ``addr`` costs CPU 0 now: the TLB lookup, plus the walk on a miss
    (its entry reads go through the L1, as x86's walker's do), from the TLB's counters."""
    before = machine.stats()["tlb0"]["walk_cycles"]
    await machine.cpus[0].load(addr, 8)
    return machine.config.latency.tlb + machine.stats()["tlb0"]["walk_cycles"] - before


def walk_rows(mmu: MmuModel, t: Translation) -> list[dict[str, Any]]:
    """One row per entry read, then the page offset: the address taken apart."""
    width = 16 if mmu.mode.va_bits == 48 else 8
    levels = {level.name: level for level in mmu.mode.levels}
    rows: list[dict[str, Any]] = []
    for i, step in enumerate(t.steps):
        level = levels[step.level]
        top = level.shift + level.nr_entries.bit_length() - 2
        leaf = i == len(t.steps) - 1
        nxt = mmu.mode.levels[i + 1].name if not leaf else ""
        rows.append(
            {
                "level": step.level,
                "bits": f"{top}..{level.shift}",
                "index": step.index,
                "table": f"{step.table:#x}",
                "entry_addr": f"{step.address:#x}",
                "entry": f"{step.entry:#0{mmu.mode.entry_size * 2 + 2}x}",
                "flags": " ".join(step.flags),
                "points_to": (
                    f"{_size(t.page_size)} page at {step.target:#x}"
                    if leaf
                    else f"{nxt} table at {step.target:#x}"
                ),
            }
        )
    shift = t.page_size.bit_length() - 1
    rows.append(
        {
            "level": "offset",
            "bits": f"{shift - 1}..0",
            "index": f"{t.vaddr & (t.page_size - 1):#x}",
            "table": "",
            "entry_addr": "",
            "entry": "",
            "flags": "",
            "points_to": f"physical {t.phys:#x} (virtual {t.vaddr:#0{width}x})",
        }
    )
    return rows


async def x86_64_part(machine: hwsim.Machine) -> dict[str, Any]:
    kernel = machine.kernel
    await kernel.kmalloc(200)  # a neighbour, so that ours is not at the slab page's start
    obj = await kernel.kmalloc(200)
    kaddr = obj + FIELD_OFFSET
    nr_pages = 3
    vbuf = await kernel.vmalloc(nr_pages * 4096)
    vaddr = vbuf + 4096 + 0x123  # somewhere in the second page

    mmu = _mmu(machine)
    kwalk = mmu.walk(kaddr)
    vwalk = mmu.walk(vaddr)
    guard = vbuf + nr_pages * 4096
    try:
        mmu.walk(guard)
    except PageFault as fault:
        guard_fault = str(fault)
        guard_level = fault.level
    else:  # pragma: no cover - the guard page is never mapped
        raise AssertionError(f"the guard page {guard:#x} is mapped")

    # What a miss and a hit cost CPU 0, from a cold start (empty TLB and caches, as after
    # boot): a miss reads each level's entry from RAM through the L1 and L2.
    machine.flush_tlb_all()
    machine.wbinvd()
    k_miss = await _translation_cycles(machine, kaddr)
    k_hit = await _translation_cycles(machine, kaddr + 8)
    machine.flush_tlb_all()
    machine.wbinvd()
    v_miss = await _translation_cycles(machine, vaddr)

    phys_by_arithmetic = kernel.virt_to_phys(kaddr)
    vpfn = await kernel.vmalloc_to_pfn(vaddr)
    return {
        "kmalloc": walk_rows(mmu, kwalk),
        "vmalloc": walk_rows(mmu, vwalk),
        "guard_fault": guard_fault,
        "summary": {
            "x86_64_kmalloc_vaddr": f"{kaddr:#x}",
            "x86_64_kmalloc_phys": f"{kwalk.phys:#x}",
            "x86_64_kmalloc_page_size": kwalk.page_size,
            "x86_64_kmalloc_levels_read": len(kwalk.steps),
            "x86_64_virt_to_phys": f"{phys_by_arithmetic:#x}",
            "x86_64_virt_to_phys_agrees": phys_by_arithmetic == kwalk.phys,
            "x86_64_vmalloc_vaddr": f"{vaddr:#x}",
            "x86_64_vmalloc_phys": f"{vwalk.phys:#x}",
            "x86_64_vmalloc_page_size": vwalk.page_size,
            "x86_64_vmalloc_levels_read": len(vwalk.steps),
            "x86_64_vmalloc_to_pfn": vpfn,
            "x86_64_vmalloc_to_pfn_agrees": vpfn == vwalk.pfn,
            "x86_64_guard_page": f"{guard:#x}",
            "x86_64_guard_page_fault_level": guard_level,
            "x86_64_kmalloc_cycles_tlb_miss": k_miss,
            "x86_64_kmalloc_cycles_tlb_hit": k_hit,
            "x86_64_vmalloc_cycles_tlb_miss": v_miss,
        },
    }


def _check(
    seg: Segmentation, label: str, selector: int, offset: int, **access: Any
) -> dict[str, Any]:
    """One access through segmentation: its linear address, or the fault's first line."""
    cpl = access.get("cpl", 0)
    kind = "write" if access.get("write") else "fetch" if access.get("execute") else "read"
    try:
        t = seg.logical_to_linear(selector, offset, **access)
    except hwsim.SegmentationFault as fault:  # #GP (GeneralProtectionFault) or #NP
        first, _, detail = str(fault).partition("\n")
        result = f"{first} ({detail.removeprefix('hwsim: ')})"
    else:
        result = f"linear {t.linear:#010x}" + (" == offset" if t.flat else "")
    return {
        "logical": f"{label}:{offset:#x}",
        "access": f"{kind}, CPL {cpl}",
        "result": result,
    }


async def i386_part(seed: int) -> dict[str, Any]:
    config = hwsim.MachineConfig(arch="i386", ram="256MiB", seed=seed)
    async with hwsim.boot(config) as m32:
        kernel = m32.kernel
        mmu = _mmu(m32)

        # The per-CPU area of CPU 0 and the GDT: pages from the buddy allocator, in the
        # direct map. GDTR holds the GDT's *linear* address, so the CPU reads descriptors
        # through paging: the segmentation unit translates with the MMU's walk.
        percpu = kernel.page_address(await kernel.alloc_pages(0))
        gdt_pfn = await kernel.alloc_pages(0)
        gdt_linear = kernel.page_address(gdt_pfn)
        m32.ram.model.write(gdt_pfn << 12, gdt_bytes(linux_i386_gdt(percpu_offset=percpu)))
        seg = Segmentation(
            m32.ram.model,
            gdt_base=gdt_linear,
            gdt_limit=GDT_SIZE - 1,
            translate=lambda linear: mmu.walk(linear).phys,
        )

        await kernel.kmalloc(64)
        ptr = await kernel.kmalloc(64) + 0x10  # a C pointer: the "virtual address"
        flat = seg.logical_to_linear(__KERNEL_DS, ptr, size=4)
        paging = mmu.walk(flat.linear)
        percpu_t = seg.logical_to_linear(__KERNEL_PERCPU, PERCPU_VAR_OFFSET, size=4)
        percpu_walk = mmu.walk(percpu_t.linear)
        vbuf = await kernel.vmalloc(4096)
        vflat = seg.logical_to_linear(__KERNEL_DS, vbuf + 0x20, size=4)
        vwalk = mmu.walk(vflat.linear)

        bios = GDT_ENTRY_PNPBIOS_DS * 8
        checks = [
            _check(seg, "__KERNEL_DS", __KERNEL_DS, ptr, size=4),
            # i386 kernels keep __USER_DS in %ds/%es even in kernel mode (entry_32.S):
            # also flat, so the same linear address.
            _check(seg, "__USER_DS", __USER_DS, ptr, size=4),
            _check(seg, "__KERNEL_PERCPU", __KERNEL_PERCPU, PERCPU_VAR_OFFSET, size=4),
            _check(seg, "__KERNEL_DS", __KERNEL_DS, ptr, cpl=3),
            _check(seg, "__KERNEL_CS", __KERNEL_CS, ptr, write=True),
            _check(seg, "PNP_DS", bios, 0xFFFF),
            _check(seg, "PNP_DS", bios, 0x10000),
            _check(seg, "null", 0, ptr),
            _check(seg, "GDT entry 40", 40 << 3, ptr),
        ]
        virt_to_phys = kernel.virt_to_phys(ptr)
        vpfn = await kernel.vmalloc_to_pfn(vbuf)
        return {
            "logical_to_linear": flat.steps(),
            "paging": walk_rows(mmu, paging),
            "percpu_segment": percpu_t.steps(),
            "percpu_paging": walk_rows(mmu, percpu_walk),
            "vmalloc_paging": walk_rows(mmu, vwalk),
            "segment_checks": checks,
            "summary": {
                "i386_pointer": f"{ptr:#010x}",
                "i386_linear": f"{flat.linear:#010x}",
                "i386_flat_linear_equals_offset": flat.linear == ptr,
                "i386_phys": f"{paging.phys:#x}",
                "i386_virt_to_phys_agrees": virt_to_phys == paging.phys,
                "i386_kmalloc_page_size": paging.page_size,
                "i386_kmalloc_levels_read": len(paging.steps),
                "i386_vmalloc_page_size": vwalk.page_size,
                "i386_vmalloc_levels_read": len(vwalk.steps),
                "i386_vmalloc_to_pfn_agrees": vpfn == vwalk.pfn,
                "i386_gdt_linear": f"{gdt_linear:#010x}",
                "i386_percpu_base": f"{percpu_t.descriptor.base:#010x}",
                "i386_percpu_offset": f"{PERCPU_VAR_OFFSET:#x}",
                "i386_percpu_linear": f"{percpu_t.linear:#010x}",
                "i386_percpu_linear_is_base_plus_offset": (
                    percpu_t.linear == percpu + PERCPU_VAR_OFFSET
                ),
            },
        }


async def scenario(machine: hwsim.Machine) -> dict[str, Any]:
    x64 = await x86_64_part(machine)
    i386 = await i386_part(machine.config.seed)
    return {
        "summary": {**x64["summary"], **i386["summary"]},
        "x86_64_kmalloc": x64["kmalloc"],
        "x86_64_vmalloc": x64["vmalloc"],
        "x86_64_guard_page_fault": x64["guard_fault"],
        "i386_logical_to_linear": i386["logical_to_linear"],
        "i386_paging": i386["paging"],
        "i386_percpu_segment": i386["percpu_segment"],
        "i386_percpu_paging": i386["percpu_paging"],
        "i386_vmalloc_paging": i386["vmalloc_paging"],
        "i386_segment_checks": i386["segment_checks"],
    }
