"""MachineConfig: what machine to build. Frozen attrs classes, validated where they are written.

Every invalid value raises :class:`~hwsim.ConfigError` naming the field (dotted for nested
configs: ``"latency.ram"``), at construction time, so a bad config never reaches ``boot``.

The default is a small embedded-style x86_64 board: 64 MiB of RAM, 2 CPUs, a 32 KiB L1d per
CPU and a shared 256 KiB L2, a 64-entry TLB and a 4-channel DMA controller with a 32-bit
mask on a non-coherent bus. Units that have not landed yet (see docs/architecture.md)
accept and validate their configs now, so that the contract's names are stable.
"""

from __future__ import annotations

from typing import Any

import attrs

from .errors import ConfigError
from .units import PAGE_SIZE, format_size, parse_size

ARCHES = ("x86_64", "i386")
REPLACEMENT_POLICIES = ("lru", "fifo", "random")

# Physical memory the model accepts: at least 8 MiB (room for ZONE_DMA's first pages, the
# kernel image and page tables), at most what the architecture can address: 64 GiB on i386
# with PAE (36-bit physical addresses), 64 TiB on x86_64 (46-bit with 4-level paging).
MIN_RAM = 8 << 20
MAX_RAM = {"x86_64": 1 << 46, "i386": 1 << 36}


def _size(name: str, value: int | str, minimum: int = 0) -> int:
    """Parse a size field (int or "64MiB"), raising ConfigError naming the field."""
    try:
        size = parse_size(value)
    except ValueError as exc:
        raise ConfigError(name, str(exc)) from None
    if size < minimum:
        raise ConfigError(name, f"must be at least {format_size(minimum)}, got {value!r}")
    return size


# One converter per size field, written out so that type checkers (mypy's attrs plugin)
# see that these fields accept "64MiB" as well as ints.
def _ram_size(value: int | str) -> int:
    return _size("ram", value, MIN_RAM)


def _cma_size(value: int | str) -> int:
    return _size("cma", value)


def _swap_size(value: int | str) -> int:
    return _size("swap", value)


def _cache_size(value: int | str) -> int:
    return _size("cache.size", value, 64)


def _int_field(name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> Any:
    def check(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(name, f"must be an int, got {value!r}")
        if value < minimum:
            raise ConfigError(name, f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ConfigError(name, f"must be <= {maximum}, got {value}")

    return attrs.field(default=default, validator=check)


def _choice_field(name: str, default: str, choices: tuple[str, ...]) -> Any:
    def check(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
        if value not in choices:
            raise ConfigError(name, f"must be one of {', '.join(choices)}; got {value!r}")

    return attrs.field(default=default, validator=check)


def _bool_field(name: str, default: bool) -> Any:
    def check(instance: object, attribute: attrs.Attribute[bool], value: object) -> None:
        if not isinstance(value, bool):
            raise ConfigError(name, f"must be True or False, got {value!r}")

    return attrs.field(default=default, validator=check)


def _power_of_two(name: str, value: int) -> None:
    if value <= 0 or value & (value - 1):
        raise ConfigError(name, f"must be a power of two, got {value}")


@attrs.frozen(kw_only=True)
class LatencyConfig:
    """Latencies in cycles, and RAM bandwidth.

    A RAM access of ``n`` bytes takes ``ram + ceil(n / ram_bytes_per_cycle)`` cycles; the
    memory channel is occupied for the transfer part, so concurrent requesters queue.
    """

    ram: int = _int_field("latency.ram", 100)
    ram_bytes_per_cycle: int = _int_field("latency.ram_bytes_per_cycle", 16, minimum=1)
    l1: int = _int_field("latency.l1", 4)
    l2: int = _int_field("latency.l2", 12)
    tlb: int = _int_field("latency.tlb", 1)
    interrupt: int = _int_field("latency.interrupt", 200)


@attrs.frozen(kw_only=True)
class TlbConfig:
    """The per-CPU data TLB: ``entries`` split into sets of ``ways``.

    ``walk_through_caches``: the page-table walker reads entries through the CPU's L1 (and
    L2), as x86's does (default); False sends its reads straight to RAM.
    """

    entries: int = _int_field("tlb.entries", 64, minimum=1)
    ways: int = _int_field("tlb.ways", 4, minimum=1)
    replacement: str = _choice_field("tlb.replacement", "lru", REPLACEMENT_POLICIES)
    pcid: bool = _bool_field("tlb.pcid", False)
    walk_through_caches: bool = _bool_field("tlb.walk_through_caches", True)

    def __attrs_post_init__(self) -> None:
        if self.entries % self.ways:
            raise ConfigError(
                "tlb.ways", f"{self.entries} entries do not split into {self.ways} ways"
            )


@attrs.frozen(kw_only=True)
class CacheConfig:
    """One set-associative, physically indexed cache level."""

    size: int = attrs.field(default=32 << 10, converter=_cache_size)
    ways: int = _int_field("cache.ways", 8, minimum=1)
    line: int = _int_field("cache.line", 64, minimum=8)
    replacement: str = _choice_field("cache.replacement", "lru", REPLACEMENT_POLICIES)
    write_back: bool = _bool_field("cache.write_back", True)

    def __attrs_post_init__(self) -> None:
        _power_of_two("cache.line", self.line)
        if self.size % (self.ways * self.line):
            raise ConfigError(
                "cache.size", f"{self.size} bytes do not split into {self.ways} ways of {self.line}"
            )
        sets = self.size // (self.ways * self.line)
        if sets & (sets - 1):
            raise ConfigError(
                "cache.size", f"gives {sets} sets of {self.ways} ways; sets must be a power of two"
            )


def _cache_level(name: str, optional: bool = False) -> Any:
    def check(instance: object, attribute: attrs.Attribute[object], value: object) -> None:
        if not (isinstance(value, CacheConfig) or (optional and value is None)):
            kind = "a CacheConfig or None" if optional else "a CacheConfig"
            raise ConfigError(name, f"must be {kind}, got {value!r}")

    return check


@attrs.frozen(kw_only=True)
class CachesConfig:
    """The cache hierarchy: an L1d per CPU and an optional shared L2 (``l2=None``)."""

    l1d: CacheConfig = attrs.field(factory=CacheConfig, validator=_cache_level("caches.l1d"))
    l2: CacheConfig | None = attrs.field(
        factory=lambda: CacheConfig(size=256 << 10, ways=8, line=64),
        validator=_cache_level("caches.l2", optional=True),
    )


@attrs.frozen(kw_only=True)
class DmaConfig:
    """The DMA controller (and the device the DMA API sees: its mask, scatter-gather and
    maximum segment size)."""

    channels: int = _int_field("dma.channels", 4, minimum=1, maximum=64)
    scatter_gather: bool = _bool_field("dma.scatter_gather", False)
    mask_bits: int = _int_field("dma.mask_bits", 32, minimum=24, maximum=64)
    bytes_per_cycle: int = _int_field("dma.bytes_per_cycle", 8, minimum=1)
    #: The device's largest DMA segment (``dma_set_max_seg_size``; Linux's default without
    #: dma_parms is 64 KiB): dma_map_sg never makes a longer one, IOMMU or not.
    max_segment_size: int = _int_field(
        "dma.max_segment_size", 64 << 10, minimum=PAGE_SIZE, maximum=(1 << 32) - 1
    )


@attrs.frozen(kw_only=True)
class DebugConfig:
    """Kernel debug options: ``slub_debug`` and fault injection (failslab, fail_page_alloc),
    with the probability in percent as in debugfs."""

    slub_debug: bool = _bool_field("debug.slub_debug", False)
    failslab_probability: int = _int_field("debug.failslab_probability", 0, maximum=100)
    fail_page_alloc_probability: int = _int_field(
        "debug.fail_page_alloc_probability", 0, maximum=100
    )


def _nested(name: str, cls: type) -> Any:
    def check(instance: object, attribute: attrs.Attribute[object], value: object) -> None:
        if not isinstance(value, cls):
            raise ConfigError(name, f"must be a {cls.__name__}, got {value!r}")

    return attrs.field(factory=cls, validator=check)


@attrs.frozen(kw_only=True)
class MachineConfig:
    """The machine to build. All fields are keywords with defaults.

    Example:
        >>> import hwsim
        >>> hwsim.MachineConfig(ram="64MiB", cpus=2, seed=7).ram
        67108864
        >>> hwsim.MachineConfig(cpus=0)
        Traceback (most recent call last):
        ...
        hwsim.errors.ConfigError: cpus: must be >= 1, got 0

    Attributes:
        ram: physical memory in bytes (int or "64MiB"/"4GiB"), a multiple of 4 KiB.
        cpus: number of CPUs (1..256).
        arch: "x86_64" (default) or "i386".
        pae: i386 only: PAE paging (3 levels, 8-byte entries, NX, physical memory up to
            64 GiB) instead of classic 2-level paging (up to 4 GiB).
        seed: seeds the machine's own randomness (replacement policies, workloads).
        quantum: how many cycles a CPU may run ahead of global virtual time before it
            synchronises (SystemC TLM-2.0's quantum keeper). 0 (default): every operation
            waits until its completion cycle, so ``machine.now`` is exact after each await.
            Larger values skip most of the per-operation clock jumps (each costs ~25 µs of
            host time) at the price of coarser interleaving between CPUs.
        tlb, caches, latency, dma, debug: nested configs.
        dma_coherent: False (default) models a bus that does not snoop CPU caches.
        iommu: put an IOMMU between devices and memory.
        cma: bytes reserved for the contiguous memory allocator.
        swap: bytes of swap space.
    """

    ram: int = attrs.field(default=64 << 20, converter=_ram_size)
    cpus: int = _int_field("cpus", 2, minimum=1, maximum=256)
    arch: str = _choice_field("arch", "x86_64", ARCHES)
    pae: bool = _bool_field("pae", False)
    seed: int = _int_field("seed", 0)
    quantum: int = _int_field("quantum", 0)
    tlb: TlbConfig = _nested("tlb", TlbConfig)
    caches: CachesConfig = _nested("caches", CachesConfig)
    latency: LatencyConfig = _nested("latency", LatencyConfig)
    dma: DmaConfig = _nested("dma", DmaConfig)
    dma_coherent: bool = _bool_field("dma_coherent", False)
    iommu: bool = _bool_field("iommu", False)
    cma: int = attrs.field(default=0, converter=_cma_size)
    swap: int = attrs.field(default=0, converter=_swap_size)
    debug: DebugConfig = _nested("debug", DebugConfig)

    def __attrs_post_init__(self) -> None:
        if self.ram % PAGE_SIZE:
            raise ConfigError("ram", f"must be a multiple of the 4 KiB page size, got {self.ram}")
        if self.pae and self.arch != "i386":
            raise ConfigError("pae", "PAE is an i386 paging mode; x86_64 always uses 4 levels")
        if self.arch == "i386" and not self.pae and self.ram > 1 << 32:
            raise ConfigError(
                "ram", f"{format_size(self.ram)} needs PAE on i386 (2-level paging reaches 4 GiB)"
            )
        if self.ram > MAX_RAM[self.arch]:
            raise ConfigError(
                "ram",
                f"{format_size(self.ram)} is more than {self.arch} can address "
                f"({format_size(MAX_RAM[self.arch])})",
            )
        if self.cma % PAGE_SIZE:
            raise ConfigError("cma", f"must be a multiple of the 4 KiB page size, got {self.cma}")
        if self.cma >= self.ram:
            raise ConfigError("cma", f"{format_size(self.cma)} leaves no memory outside CMA")

    def evolve(self, **changes: Any) -> MachineConfig:
        """A copy with some fields changed (validated like the original)."""
        return attrs.evolve(self, **changes)
