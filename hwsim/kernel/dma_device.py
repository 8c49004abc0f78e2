"""What a DMA API call names: the device (the DMA masks and ``dma_parms`` of a ``struct
device``), the direction of a transfer (include/linux/dma-direction.h) and the bus-address
constants, with the checks every entry point makes of them.

:class:`~hwsim.kernel.dma_api.DmaApi` takes these as arguments; the rules it applies to them
are in :mod:`hwsim.kernel.dma_api`'s docstring.
"""

from __future__ import annotations

import attrs

from ..units import PAGE_SIZE

# enum dma_data_direction (include/linux/dma-direction.h)
DMA_BIDIRECTIONAL = 0
DMA_TO_DEVICE = 1
DMA_FROM_DEVICE = 2
DMA_NONE = 3
DIRECTION_NAMES = ("DMA_BIDIRECTIONAL", "DMA_TO_DEVICE", "DMA_FROM_DEVICE", "DMA_NONE")

#: ``DMA_MAPPING_ERROR``: ``~(dma_addr_t)0`` with a 64-bit dma_addr_t.
DMA_MAPPING_ERROR = (1 << 64) - 1

DEFAULT_MAX_SEGMENT_SIZE = 1 << 16  # dma_get_max_seg_size() without dma_parms
DEFAULT_SEGMENT_BOUNDARY = (1 << 32) - 1  # dma_get_seg_boundary() without dma_parms


def DMA_BIT_MASK(n: int) -> int:
    """``DMA_BIT_MASK(n)``: the highest bus address an ``n``-bit device reaches."""
    return (1 << n) - 1


def direction_name(direction: int) -> str:
    """The enum's name of ``direction``, as dma-debug prints it."""
    return DIRECTION_NAMES[direction]


def check_direction(direction: object) -> int:
    """``valid_dma_direction()``: the direction of a mapping, or the error.

    Raises:
        TypeError: not an int.
        ValueError: DMA_NONE or a value outside the enum (a BUG_ON in Linux).
    """
    if isinstance(direction, bool) or not isinstance(direction, int):
        raise TypeError(
            f"direction is DMA_TO_DEVICE, DMA_FROM_DEVICE, ... (int), got {direction!r}"
        )
    if direction not in (DMA_BIDIRECTIONAL, DMA_TO_DEVICE, DMA_FROM_DEVICE):
        raise ValueError(
            f"invalid DMA direction {direction!r} (BUG_ON(!valid_dma_direction(dir))): "
            "a mapping is DMA_TO_DEVICE, DMA_FROM_DEVICE or DMA_BIDIRECTIONAL; DMA_NONE "
            "is only for debugging"
        )
    return direction


def _check_bits(what: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"DmaDevice.{what} is a number of address bits, got {value!r}")
    if not 24 <= value <= 64:
        raise ValueError(f"DmaDevice.{what} must be 24..64 bits, got {value}")


@attrs.frozen
class DmaDevice:
    """A device that does DMA: the ``dev`` argument of the DMA API.

    Args:
        name: for messages (``dev_name()``), e.g. ``"0000:00:1f.2"`` or ``"floppy"``.
        dma_mask: address bits of streaming DMA (``dma_set_mask``): 24 for ISA, 32, 64.
        coherent_mask: address bits of coherent memory (``dma_set_coherent_mask``); defaults
            to ``dma_mask``.
        scatter_gather: whether the device takes more than one segment per transfer.
        iommu: whether an IOMMU translates its bus addresses.
        max_segment_size: ``dma_set_max_seg_size`` (default 64 KiB, Linux's without dma_parms).

    Example:
        >>> DmaDevice("floppy", dma_mask=24).limit == 0xFFFFFF
        True
    """

    name: str = attrs.field()
    dma_mask: int = attrs.field(default=32)
    coherent_mask: int = attrs.field(
        default=attrs.Factory(lambda self: self.dma_mask, takes_self=True)
    )
    scatter_gather: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    iommu: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    max_segment_size: int = attrs.field(default=DEFAULT_MAX_SEGMENT_SIZE)

    @name.validator
    def _check_name(self, attribute: attrs.Attribute[str], value: object) -> None:
        if not isinstance(value, str) or not value:
            raise TypeError(f"a DMA device needs a name (str), got {value!r}")

    @dma_mask.validator
    def _check_mask(self, attribute: attrs.Attribute[int], value: object) -> None:
        _check_bits("dma_mask", value)

    @coherent_mask.validator
    def _check_coherent(self, attribute: attrs.Attribute[int], value: object) -> None:
        _check_bits("coherent_mask", value)

    @max_segment_size.validator
    def _check_seg(self, attribute: attrs.Attribute[int], value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < PAGE_SIZE:
            raise ValueError(f"DmaDevice.max_segment_size must be >= 4096, got {value!r}")

    @property
    def limit(self) -> int:
        """The highest bus address of streaming DMA: ``*dev->dma_mask``."""
        return DMA_BIT_MASK(self.dma_mask)

    @property
    def coherent_limit(self) -> int:
        """The highest bus address of coherent memory: ``dev->coherent_dma_mask``."""
        return DMA_BIT_MASK(self.coherent_mask)


def check_dev(dev: object) -> DmaDevice:
    """The ``dev`` argument of a DMA API call, or the error.

    Raises:
        TypeError: not a :class:`DmaDevice`.
    """
    if not isinstance(dev, DmaDevice):
        raise TypeError(f"dev must be a DmaDevice, got {dev!r}")
    return dev
