"""hwsim: a computer's memory hardware and the Linux kernel's memory allocators as actors on trio.

This module only re-exports the public names; see ../shared/spec/api.md and docs/.
"""

from .config import CacheConfig as CacheConfig
from .config import CachesConfig as CachesConfig
from .config import DebugConfig as DebugConfig
from .config import DmaConfig as DmaConfig
from .config import LatencyConfig as LatencyConfig
from .config import MachineConfig as MachineConfig
from .config import TlbConfig as TlbConfig
from .core.actor import Actor as Actor
from .core.actor import handles as handles
from .core.clock import CycleClock as CycleClock
from .core.clock import current_cycle as current_cycle
from .core.clock import sleep as sleep
from .core.clock import sleep_until as sleep_until
from .core.run import run as run
from .core.trace import Tracer as Tracer
from .devices.cpu import BatchResult as BatchResult
from .devices.cpu import current_irq as current_irq
from .devices.irq import IRQF_SHARED as IRQF_SHARED
from .errors import ActorCrashed as ActorCrashed
from .errors import ConfigError as ConfigError
from .errors import Deadlock as Deadlock
from .errors import DmaDescriptorError as DmaDescriptorError
from .errors import DmaFault as DmaFault
from .errors import DmaInFlight as DmaInFlight
from .errors import DmaMappingError as DmaMappingError
from .errors import DoubleFree as DoubleFree
from .errors import HwsimError as HwsimError
from .errors import InvalidFree as InvalidFree
from .errors import IrqBusy as IrqBusy
from .errors import NetdevTxBusy as NetdevTxBusy
from .errors import OutOfMemory as OutOfMemory
from .errors import SegmentationFault as SegmentationFault
from .kernel.dma_api import DMA_BIDIRECTIONAL as DMA_BIDIRECTIONAL
from .kernel.dma_api import DMA_FROM_DEVICE as DMA_FROM_DEVICE
from .kernel.dma_api import DMA_NONE as DMA_NONE
from .kernel.dma_api import DMA_TO_DEVICE as DMA_TO_DEVICE
from .kernel.gfp import GFP_ATOMIC as GFP_ATOMIC
from .kernel.gfp import GFP_DMA as GFP_DMA
from .kernel.gfp import GFP_DMA32 as GFP_DMA32
from .kernel.gfp import GFP_HIGHUSER as GFP_HIGHUSER
from .kernel.gfp import GFP_HIGHUSER_MOVABLE as GFP_HIGHUSER_MOVABLE
from .kernel.gfp import GFP_KERNEL as GFP_KERNEL
from .kernel.gfp import GFP_NOWAIT as GFP_NOWAIT
from .kernel.gfp import GFP_NOWARN as GFP_NOWARN
from .kernel.gfp import GFP_USER as GFP_USER
from .kernel.gfp import GFP_ZERO as GFP_ZERO
from .kernel.kernel import Kernel as Kernel
from .kernel.kmalloc import ZERO_SIZE_PTR as ZERO_SIZE_PTR
from .kernel.slab import SLAB_CACHE_DMA as SLAB_CACHE_DMA
from .kernel.slab import SLAB_HWCACHE_ALIGN as SLAB_HWCACHE_ALIGN
from .kernel.slab import SLAB_POISON as SLAB_POISON
from .kernel.slab import SLAB_RECLAIM_ACCOUNT as SLAB_RECLAIM_ACCOUNT
from .kernel.slab import SLAB_RED_ZONE as SLAB_RED_ZONE
from .kernel.slab import SLAB_STORE_USER as SLAB_STORE_USER
from .kernel.slab import KmemCache as KmemCache
from .kernel.slab import SlabCacheBusy as SlabCacheBusy
from .kernel.zones import MAX_PAGE_ORDER as MAX_PAGE_ORDER
from .machine import Machine as Machine
from .machine import boot as boot
from .units import PAGE_SHIFT as PAGE_SHIFT
from .units import PAGE_SIZE as PAGE_SIZE
from .units import parse_size as parse_size

__version__ = "0.1.0"
