"""The errors hwsim raises.

Every error a user can provoke is a :class:`HwsimError`. The messages speak the kernel's
language ("page allocation failure", "Object already free", "rejecting DMA map of vmalloc
memory") and say what a driver should do instead, so that a failing scenario teaches
something rather than just stopping.
"""

from __future__ import annotations


class HwsimError(Exception):
    """Base class of every error hwsim raises on purpose.

    Attributes:
        actor: the name of the actor (unit or service) that raised it, when it came back
            from a request; ``None`` when it was raised in the caller's own task.
        done: the cycle the refused request's work ended, when the work cost time (an
            allocation that searched and drained lists before it failed); ``None`` when
            the request was refused before any work. The kernel API charges it to the
            calling CPU before raising.
    """

    actor: str | None = None
    done: int | None = None


class ConfigError(HwsimError, ValueError):
    """A :class:`~hwsim.MachineConfig` field has a value the machine cannot be built with.

    Attributes:
        field: the name of the offending field (dotted for nested configs, ``"tlb.entries"``).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class OutOfMemory(HwsimError):
    """An allocation could not be satisfied: what Linux reports as a NULL return or -ENOMEM."""


class InvalidFree(HwsimError):
    """Freeing an address the allocator did not hand out, or with the wrong allocator."""


class DoubleFree(InvalidFree):
    """Freeing an object or page that is already free ("Object already free")."""


class DmaInFlight(InvalidFree):
    """Freeing or unmapping memory that a DMA transfer still reads or writes: wait for the
    transfer's completion (its interrupt) first. Nothing is freed."""


class DmaMappingError(HwsimError):
    """The DMA API refused a mapping (``dma_mapping_error()`` would return true)."""


class DmaFault(HwsimError):
    """A device accessed bus addresses outside of what was mapped for it."""


class SegmentationFault(HwsimError):
    """An illegal access by a CPU: unmapped address, guard page, wrong permission, or an
    address beyond the end of physical memory."""

    def __init__(self, message: str, address: int | None = None) -> None:
        super().__init__(message)
        self.address = address


class IrqBusy(HwsimError):
    """``request_irq`` failed with -EBUSY: the line is taken and not shared by both."""

    errno = -16  # -EBUSY


class Deadlock(HwsimError):
    """Every task waits and nothing can wake them. The message names the wait-for cycle."""


class ActorCrashed(HwsimError):
    """An actor's task died of an error it did not hand back to a caller.

    The machine cannot go on without the unit, so the whole machine stops with this error;
    ``__cause__`` is the original exception.

    Attributes:
        secondary: True for the error a caller receives because the actor it waited on
            stopped; the reason why it stopped is reported by another error.
    """

    secondary: bool = False


class NetdevTxBusy(HwsimError):
    """A network card's transmit ring has no free descriptor: what ``ndo_start_xmit``
    answers with ``NETDEV_TX_BUSY``. Clean completed descriptors first."""


class DmaDescriptorError(HwsimError, ValueError):
    """A DMA descriptor or chain the controller cannot run: zero length, a misaligned bus
    address, no descriptor, or a chain on a controller without scatter-gather. (Also a
    ValueError: it is a bad argument.) Nothing moves."""
