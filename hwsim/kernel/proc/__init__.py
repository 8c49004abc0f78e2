"""The memory-management files of /proc, byte for byte as Linux 6.8 prints them on x86.

Each file is a pure function from plain data to the kernel's exact text, so it can be tested
without the allocators that will feed it:

================  =========================================  ==================================
file              kernel source (v6.8)                       renderer
================  =========================================  ==================================
buddyinfo         mm/vmstat.c ``frag_show_print``            :func:`render_buddyinfo`
pagetypeinfo      mm/vmstat.c ``pagetypeinfo_show``          :func:`render_pagetypeinfo`
zoneinfo          mm/vmstat.c ``zoneinfo_show_print``        :func:`render_zoneinfo`
slabinfo          mm/slab_common.c ``slab_show``             :func:`render_slabinfo`
vmallocinfo       mm/vmalloc.c ``s_show``                    :func:`render_vmallocinfo`
meminfo           fs/proc/meminfo.c ``meminfo_proc_show``    :func:`render_meminfo`
================  =========================================  ==================================

Which kernel. Linux 6.8, the kernel of Ubuntu 24.04 LTS, built with Ubuntu's generic amd64
configuration (``debian.master/config/annotations``): CONFIG_NUMA, CONFIG_SWAP, CONFIG_ZSWAP,
CONFIG_ZSMALLOC, CONFIG_NUMA_BALANCING, CONFIG_UNACCEPTED_MEMORY, CONFIG_MEMORY_FAILURE,
CONFIG_TRANSPARENT_HUGEPAGE, CONFIG_HUGETLB_PAGE, CONFIG_MEMORY_ISOLATION and CONFIG_ZONE_DEVICE
are set; CONFIG_CMA is *not* (Ubuntu turns it off on amd64, LP: #1803206), so by default there is
no CMA migratetype column and no CmaTotal/CmaFree line. A machine booted with a CMA area runs a
CONFIG_CMA=y kernel: ``ProcConfig(cma=True)`` prints what such a kernel prints. The i386 variant
(:meth:`ProcConfig.for_arch`) is a 32-bit PAE build with HIGHMEM and without NUMA. Version
details that matter: 6.8 prints ``promo`` (v6.1+) but not ``nr_free_pages_blocks`` (v6.15+),
nor the pageset ``high_min``/``high_max`` lines (v6.13+), and its vmallocinfo has no ``sparse``
kind (v6.9+).

What the model cannot supply yet is printed as zero, as a kernel would print an idle counter:
the per-node statistics of zoneinfo default to zero unless given, NUMA hit/miss counters are
zero, ``boost`` is zero (no watermark boosting) and ``node_unreclaimable`` is 0.

Use :class:`Proc` to serve the files by name; the lead wires the slab, vmalloc and meminfo
sources in ``machine.py``::

    >>> from hwsim.kernel.buddy import BuddyAllocator
    >>> proc = Proc.for_buddy(BuddyAllocator(nr_pages=16384))      # 64 MiB
    >>> proc.read("buddyinfo").splitlines()[1].split()
    ['Node', '0,', 'zone', 'DMA32', '0', '0', '0', '0', '0', '0', '0', '0', '1', '1', '10']
"""

from .buddyinfo import render_buddyinfo as render_buddyinfo
from .buddyinfo import render_pagetypeinfo as render_pagetypeinfo
from .config import KERNEL_VERSION as KERNEL_VERSION
from .config import ProcConfig as ProcConfig
from .directory import Proc as Proc
from .directory import Renderer as Renderer
from .meminfo import MeminfoSources as MeminfoSources
from .meminfo import direct_map_kb as direct_map_kb
from .meminfo import meminfo_sources as meminfo_sources
from .meminfo import render_meminfo as render_meminfo
from .meminfo import si_mem_available as si_mem_available
from .meminfo import vm_commit_limit as vm_commit_limit
from .meminfo import vmalloc_total_bytes as vmalloc_total_bytes
from .slabinfo import SLABINFO_HEADER as SLABINFO_HEADER
from .slabinfo import SlabInfoRow as SlabInfoRow
from .slabinfo import render_slabinfo as render_slabinfo
from .vmallocinfo import VM_ALLOC as VM_ALLOC
from .vmallocinfo import VM_DMA_COHERENT as VM_DMA_COHERENT
from .vmallocinfo import VM_IOREMAP as VM_IOREMAP
from .vmallocinfo import VM_MAP as VM_MAP
from .vmallocinfo import VM_NO_GUARD as VM_NO_GUARD
from .vmallocinfo import VM_UNINITIALIZED as VM_UNINITIALIZED
from .vmallocinfo import VM_USERMAP as VM_USERMAP
from .vmallocinfo import VmallocInfoRow as VmallocInfoRow
from .vmallocinfo import render_vmallocinfo as render_vmallocinfo
from .watermarks import low_wmark_pages as low_wmark_pages
from .watermarks import totalreserve_pages as totalreserve_pages
from .zoneinfo import NUMA_STAT_NAMES as NUMA_STAT_NAMES
from .zoneinfo import calculate_normal_threshold as calculate_normal_threshold
from .zoneinfo import node_stat_names as node_stat_names
from .zoneinfo import render_zoneinfo as render_zoneinfo

__all__ = [
    "KERNEL_VERSION",
    "NUMA_STAT_NAMES",
    "SLABINFO_HEADER",
    "VM_ALLOC",
    "VM_DMA_COHERENT",
    "VM_IOREMAP",
    "VM_MAP",
    "VM_NO_GUARD",
    "VM_UNINITIALIZED",
    "VM_USERMAP",
    "MeminfoSources",
    "Proc",
    "ProcConfig",
    "SlabInfoRow",
    "VmallocInfoRow",
    "calculate_normal_threshold",
    "direct_map_kb",
    "low_wmark_pages",
    "meminfo_sources",
    "node_stat_names",
    "render_buddyinfo",
    "render_meminfo",
    "render_pagetypeinfo",
    "render_slabinfo",
    "render_vmallocinfo",
    "render_zoneinfo",
    "si_mem_available",
    "totalreserve_pages",
    "vm_commit_limit",
    "vmalloc_total_bytes",
]
