"""/proc/slabinfo (mm/slab_common.c ``slab_show``), version 2.1."""

from __future__ import annotations

from collections.abc import Iterable

from ..slab import SlabInfo

# The record /proc/slabinfo prints is the slab allocator's own ``struct slabinfo``.
SlabInfoRow = SlabInfo


SLABINFO_HEADER = (
    "slabinfo - version: 2.1\n"
    "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab>"
    " : tunables <limit> <batchcount> <sharedfactor>"
    " : slabdata <active_slabs> <num_slabs> <sharedavail>\n"
)


def render_slabinfo(rows: Iterable[SlabInfoRow]) -> str:
    """/proc/slabinfo, in the order given.

    Linux walks the ``slab_caches`` list, and ``create_cache()`` adds each new cache with
    ``list_add()``, at the head: the most recently created cache comes first and the boot
    caches (kmalloc-*, then kmem_cache_node, kmem_cache) last. Pass rows in that order, e.g.
    ``reversed(caches_in_creation_order)``. The header is printed with the first cache, so a
    list without caches gives an empty file, as the kernel's ``slab_show`` would.
    """
    lines = [
        f"{r.name:<17s} {r.active_objs:6d} {r.num_objs:6d} {r.objsize:6d} {r.objperslab:4d}"
        f" {r.pagesperslab:4d} : tunables {r.limit:4d} {r.batchcount:4d} {r.sharedfactor:4d}"
        f" : slabdata {r.active_slabs:6d} {r.num_slabs:6d} {r.sharedavail:6d}\n"
        for r in rows
    ]
    return SLABINFO_HEADER + "".join(lines) if lines else ""
