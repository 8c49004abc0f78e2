"""Scatterlists (lib/scatterlist.c): the page, offset and length of each piece of a buffer
that :meth:`~hwsim.kernel.dma_api.DmaApi.dma_map_sg` maps, and the helpers that fill them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import attrs

from ..units import PAGE_SHIFT, PAGE_SIZE
from ..validate import check_int as _check_int
from .layout import Layout
from .vmalloc import VmallocAllocator


@attrs.define
class SgEntry:
    """One ``struct scatterlist``: a page, an offset into it and a length; ``dma_address`` and
    ``dma_length`` are filled in by :meth:`~hwsim.kernel.dma_api.DmaApi.dma_map_sg` for the
    first nents entries. ``pfn``, ``offset`` and ``length`` are checked whenever they are set
    (ints; no negative offset, which would reach the page before)."""

    pfn: int = attrs.field(default=-1, validator=lambda _, a, v: _check_int(a.name, v, -1))
    offset: int = attrs.field(default=0, validator=lambda _, a, v: _check_int(a.name, v))
    length: int = attrs.field(default=0, validator=lambda _, a, v: _check_int(a.name, v))
    dma_address: int = 0
    dma_length: int = 0


class ScatterList:
    """A scatterlist (``struct sg_table``): entries, and ``nents`` once mapped.

    Example:
        >>> sgl = ScatterList.from_pages([(0x1234, 0, 4096), (0x1235, 0, 100)])
        >>> len(sgl), sgl[1].length
        (2, 100)
    """

    def __init__(self, entries: Iterable[SgEntry]) -> None:
        self.entries = list(entries)
        for entry in self.entries:
            if not isinstance(entry, SgEntry):
                raise TypeError(f"a scatterlist holds SgEntry objects, got {entry!r}")
        self.nents = 0  # DMA segments after dma_map_sg (sgt->nents)

    @classmethod
    def from_pages(cls, pages: Iterable[tuple[int, int, int]]) -> ScatterList:
        """One entry per ``(pfn, offset, length)``."""
        sgl = sg_init_table(0)
        for pfn, offset, length in pages:
            entry = SgEntry()
            sg_set_page(entry, pfn, length, offset)
            sgl.entries.append(entry)
        return sgl

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[SgEntry]:
        return iter(self.entries)

    def __getitem__(self, index: int) -> SgEntry:
        return self.entries[index]

    def __repr__(self) -> str:
        return f"<ScatterList {len(self.entries)} entries, nents={self.nents}>"


def sg_init_table(nents: int) -> ScatterList:
    """``sg_init_table()``: ``nents`` empty entries, to be set with :func:`sg_set_page`."""
    _check_int("nents", nents)
    return ScatterList(SgEntry() for _ in range(nents))


def sg_set_page(sg: SgEntry, pfn: int, length: int, offset: int = 0) -> None:
    """``sg_set_page()``: point an entry at ``length`` bytes from ``offset`` into page ``pfn``."""
    if not isinstance(sg, SgEntry):
        raise TypeError(f"sg_set_page takes an SgEntry, got {sg!r}")
    _check_int("pfn", pfn)
    _check_int("length", length, 1)
    _check_int("offset", offset)
    sg.pfn, sg.offset, sg.length = pfn, offset, length


def sg_set_buf(layout: Layout, sg: SgEntry, buf: int, buflen: int) -> None:
    """``sg_set_buf()``: a direct-map buffer (kmalloc memory); vmalloc addresses are refused,
    as CONFIG_DEBUG_SG's ``BUG_ON(!virt_addr_valid(buf))`` does."""
    phys = layout.virt_to_phys(buf)  # ValueError for vmalloc, with the advice
    sg_set_page(sg, phys >> PAGE_SHIFT, buflen, phys & (PAGE_SIZE - 1))


def sg_from_vmalloc(vmalloc: VmallocAllocator, addr: int, size: int) -> ScatterList:
    """What a driver does to DMA into vmalloc memory: one entry per page, found with
    ``vmalloc_to_page`` (the page table walk), the first at the offset of ``addr``."""
    _check_int("addr", addr)
    _check_int("size", size, 1)
    entries = []
    pos = addr
    end = addr + size
    while pos < end:
        chunk = min(end - pos, PAGE_SIZE - (pos & (PAGE_SIZE - 1)))
        entry = SgEntry()
        sg_set_page(entry, vmalloc.vmalloc_to_pfn(pos), chunk, pos & (PAGE_SIZE - 1))
        entries.append(entry)
        pos += chunk
    return ScatterList(entries)
