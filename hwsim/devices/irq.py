"""The interrupt controller: lines, handlers, routing to CPUs, masking, /proc/interrupts.

A model of an x86 IO-APIC with the local APICs' interrupt flag, in Linux's vocabulary:

- Lines are numbered ``0 .. nr_irqs - 1``. :meth:`InterruptControllerModel.request` is
  ``request_irq``: a line is exclusive unless every handler on it asked for ``shared``
  (IRQF_SHARED), and a mismatch fails with -EBUSY as in kernel/irq/manage.c.
- Routing: each line has an affinity (all CPUs by default, :meth:`set_affinity` changes it)
  and goes to the lowest-numbered CPU of it (``policy="lowest"``, what x86's vector matrix
  does with a one-CPU effective affinity), or to its CPUs in turn (``"round_robin"``, what
  irqbalance approximates). A CPU with interrupts disabled does not make the line go
  elsewhere: the interrupt waits in that CPU's APIC.
- Masking: :meth:`local_irq_save` / :meth:`local_irq_restore` clear and restore a CPU's
  interrupt flag (flags are EFLAGS with ``X86_EFLAGS_IF`` = 0x200, nestable). An interrupt
  raised while the target CPU is masked is pending; raising it again before delivery
  coalesces with it (an edge-triggered line has one pending bit per vector), and restore
  returns the pending ones, in the order they were raised.
- :meth:`render_interrupts` prints /proc/interrupts as kernel/irq/proc.c's
  ``show_interrupts`` does on x86 (counts are interrupts handled per CPU).

The model only decides who runs what when; an actor around it runs the handlers (the
``handler_token`` is whatever it needs to find them).
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Iterable, Sequence

import attrs

from ..core.actor import Actor, handles
from ..core.timer import Timer
from ..errors import IrqBusy

#: The interrupt-enable bit of EFLAGS, what local_irq_save's flags carry.
X86_EFLAGS_IF = 0x200
#: Linux's request_irq flag that allows sharing a line.
IRQF_SHARED = 0x80
EBUSY = 16
POLICIES = ("lowest", "round_robin")


@attrs.frozen
class IrqDelivery:
    """An interrupt a CPU takes: run ``handlers`` (tokens, in request order) on ``cpu`` at
    cycle ``at``. ``raised`` is when the device raised it; ``handlers`` is empty for a
    spurious interrupt (no handler on the line)."""

    irq: int
    cpu: int
    raised: int
    at: int
    handlers: tuple[Hashable, ...]


@attrs.frozen
class IrqStatistics:
    """What the controller has done so far."""

    raised: int
    delivered: int
    pending: int
    coalesced: int
    spurious: int
    lines_in_use: int


@attrs.define
class _Action:
    token: Hashable
    name: str
    shared: bool


class InterruptControllerModel:
    """The interrupt controller's model (no trio here: an actor wraps it).

    Example:
        >>> pic = InterruptControllerModel(2)
        >>> pic.request(11, "dma", name="dma")
        >>> pic.raise_irq(11, at=0)
        [IrqDelivery(irq=11, cpu=0, raised=0, at=200, handlers=('dma',))]
        >>> flags = pic.local_irq_save(0)
        >>> pic.raise_irq(11, at=300)
        []
        >>> pic.local_irq_restore(0, flags, at=1000)
        [IrqDelivery(irq=11, cpu=0, raised=300, at=1000, handlers=('dma',))]

    Args:
        nr_cpus: CPUs to route to.
        nr_irqs: lines (interrupt numbers ``0 .. nr_irqs - 1``).
        latency: cycles from raising an interrupt to its handler starting
            (``LatencyConfig.interrupt``).
        policy: ``"lowest"`` or ``"round_robin"`` (see the module docstring).
        chip: the chip name /proc/interrupts shows.
    """

    def __init__(
        self,
        nr_cpus: int,
        *,
        nr_irqs: int = 256,
        latency: int = 200,
        policy: str = "lowest",
        chip: str = "IO-APIC",
    ) -> None:
        if nr_cpus < 1:
            raise ValueError(f"nr_cpus must be >= 1, got {nr_cpus}")
        if nr_irqs < 1:
            raise ValueError(f"nr_irqs must be >= 1, got {nr_irqs}")
        if latency < 0:
            raise ValueError(f"latency must be >= 0, got {latency}")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        self.nr_cpus = nr_cpus
        self.nr_irqs = nr_irqs
        self.latency = latency
        self.policy = policy
        self.chip = chip
        self._actions: dict[int, list[_Action]] = {}
        self._affinity: dict[int, tuple[int, ...]] = {}
        self._next_cpu: dict[int, int] = {}  # round robin: index into the affinity
        self._counts: dict[int, list[int]] = {}
        self._enabled = [True] * nr_cpus
        # Per CPU: irq -> the cycle it was first raised (dicts keep raise order).
        self._pending: list[dict[int, int]] = [{} for _ in range(nr_cpus)]
        self._raised = self._delivered = self._coalesced = self._spurious = 0

    def __repr__(self) -> str:
        return (
            f"<InterruptControllerModel {self.nr_cpus} CPUs, {self.nr_irqs} lines, "
            f"{len(self._actions)} in use>"
        )

    # ------------------------------------------------------------------ checks

    def _irq(self, irq: int) -> int:
        if isinstance(irq, bool) or not isinstance(irq, int):
            raise TypeError(f"an IRQ number is an int, got {irq!r}")
        if not 0 <= irq < self.nr_irqs:
            raise ValueError(f"IRQ {irq} does not exist (-EINVAL): lines are 0..{self.nr_irqs - 1}")
        return irq

    def _cpu(self, cpu: int) -> int:
        if isinstance(cpu, bool) or not isinstance(cpu, int):
            raise TypeError(f"a CPU number is an int, got {cpu!r}")
        if not 0 <= cpu < self.nr_cpus:
            raise ValueError(f"no CPU {cpu}: the machine has {self.nr_cpus}")
        return cpu

    # ------------------------------------------------------------------ request_irq

    def request(
        self, irq: int, handler_token: Hashable, *, shared: bool = False, name: str | None = None
    ) -> None:
        """Install a handler on ``irq`` (``request_irq``; ``name`` is shown in /proc).

        Raises:
            IrqBusy: the line has a handler and it or this one is not shared (-EBUSY).
            ValueError: no such line, or this token is already on it.
        """
        self._irq(irq)
        label = name if name is not None else str(handler_token)
        actions = self._actions.get(irq, [])
        if any(a.token == handler_token for a in actions) and all(a.shared for a in actions):
            raise ValueError(
                f"request_irq: IRQ {irq}: handler {label!r} is already registered; "
                "free_irq it first"
            )
        if actions and not (shared and all(a.shared for a in actions)):
            old = actions[0]
            raise IrqBusy(
                f"genirq: Flags mismatch irq {irq}. {IRQF_SHARED if shared else 0:08x} "
                f"({label}) vs. {IRQF_SHARED if old.shared else 0:08x} ({old.name})\n"
                f"request_irq: IRQ {irq} is already in use (not shared) by "
                f"{', '.join(a.name for a in actions)}: -EBUSY. Every driver on a line must "
                "pass IRQF_SHARED (shared=True) to share it."
            )
        self._actions.setdefault(irq, actions).append(_Action(handler_token, label, shared))
        self._counts.setdefault(irq, [0] * self.nr_cpus)

    def free(self, irq: int, handler_token: Hashable) -> None:
        """Remove the handler ``handler_token`` from ``irq`` (``free_irq``).

        Raises:
            ValueError: the handler is not installed on the line ("Trying to free
                already-free IRQ").
        """
        self._irq(irq)
        actions = self._actions.get(irq, [])
        for i, action in enumerate(actions):
            if action.token == handler_token:
                del actions[i]
                if not actions:
                    del self._actions[irq]
                return
        raise ValueError(
            f"Trying to free already-free IRQ {irq}: handler {handler_token!r} is not "
            "installed on it"
        )

    def handlers(self, irq: int) -> tuple[Hashable, ...]:
        """The handler tokens installed on ``irq``, in request order."""
        return tuple(a.token for a in self._actions.get(self._irq(irq), []))

    def set_affinity(self, irq: int, cpus: Iterable[int]) -> None:
        """Route ``irq`` to ``cpus`` only (``/proc/irq/N/smp_affinity_list``).

        Raises:
            ValueError: an empty set or a CPU that does not exist (-EINVAL).
        """
        self._irq(irq)
        chosen = tuple(sorted({self._cpu(c) for c in cpus}))
        if not chosen:
            raise ValueError(f"IRQ {irq}: an affinity needs at least one CPU (-EINVAL)")
        self._affinity[irq] = chosen
        self._next_cpu[irq] = 0

    def affinity(self, irq: int) -> tuple[int, ...]:
        """The CPUs ``irq`` may be routed to."""
        return self._affinity.get(self._irq(irq), tuple(range(self.nr_cpus)))

    # ------------------------------------------------------------------ delivery

    def _target(self, irq: int) -> int:
        cpus = self.affinity(irq)
        if self.policy == "lowest":
            return cpus[0]
        i = self._next_cpu.get(irq, 0) % len(cpus)
        self._next_cpu[irq] = i + 1
        return cpus[i]

    def _deliver(self, irq: int, cpu: int, raised: int, at: int) -> IrqDelivery:
        actions = self._actions.get(irq, [])
        self._counts.setdefault(irq, [0] * self.nr_cpus)[cpu] += 1
        self._delivered += 1
        if not actions:
            self._spurious += 1
        return IrqDelivery(irq, cpu, raised, at, tuple(a.token for a in actions))

    def raise_irq(self, irq: int, at: int) -> list[IrqDelivery]:
        """A device raises ``irq`` at cycle ``at``: the deliveries it causes now.

        One delivery to the target CPU, ``latency`` cycles later; none when that CPU has
        interrupts disabled (the interrupt is pending until :meth:`local_irq_restore`).
        """
        self._irq(irq)
        self._raised += 1
        cpu = self._target(irq)
        if not self._enabled[cpu]:
            pending = self._pending[cpu]
            if irq in pending:
                self._coalesced += 1
            else:
                pending[irq] = at
            return []
        return [self._deliver(irq, cpu, at, at + self.latency)]

    def irqs_disabled(self, cpu: int) -> bool:
        """Whether ``cpu`` has its interrupts disabled."""
        return not self._enabled[self._cpu(cpu)]

    def local_irq_save(self, cpu: int) -> int:
        """Disable interrupts on ``cpu``; return the flags to restore (EFLAGS' IF bit)."""
        flags = X86_EFLAGS_IF if self._enabled[self._cpu(cpu)] else 0
        self._enabled[cpu] = False
        return flags

    def local_irq_restore(
        self, cpu: int, flags: int, *, at: int | None = None
    ) -> list[IrqDelivery]:
        """Restore ``cpu``'s interrupt flag from ``flags``; when that enables interrupts,
        return the pending ones, delivered at ``at`` (or as soon as they could be: raise
        time plus latency, whichever is later)."""
        self._enabled[self._cpu(cpu)] = bool(flags & X86_EFLAGS_IF)
        if not self._enabled[cpu]:
            return []
        pending, self._pending[cpu] = self._pending[cpu], {}
        out = []
        for irq, raised in pending.items():
            when = raised + self.latency
            out.append(self._deliver(irq, cpu, raised, when if at is None else max(at, when)))
        return out

    def local_irq_disable(self, cpu: int) -> None:
        """Disable interrupts on ``cpu`` (``cli``)."""
        self._enabled[self._cpu(cpu)] = False

    def local_irq_enable(self, cpu: int, *, at: int | None = None) -> list[IrqDelivery]:
        """Enable interrupts on ``cpu`` (``sti``): the pending ones, as restore returns."""
        return self.local_irq_restore(cpu, X86_EFLAGS_IF, at=at)

    # ------------------------------------------------------------------ introspection

    def counts(self, irq: int) -> tuple[int, ...]:
        """Interrupts handled per CPU on ``irq`` (a row of /proc/interrupts)."""
        return tuple(self._counts.get(self._irq(irq), [0] * self.nr_cpus))

    def pending(self, cpu: int) -> tuple[int, ...]:
        """The IRQs pending on ``cpu``, in raise order."""
        return tuple(self._pending[self._cpu(cpu)])

    def render_interrupts(self) -> str:
        """/proc/interrupts, as kernel/irq/proc.c ``show_interrupts`` prints it on x86.

        One row per line that has a handler or has been counted: ``"%*d: "``, ``"%10u "``
        per CPU, the chip (``" %8s"``), the hardware IRQ number and ``-edge``, then the
        handlers' names; then x86's ``ERR:`` (here: spurious interrupts, no handler on the
        line) and ``MIS:`` rows. Lines keep the kernel's trailing spaces.
        """
        prec, j = 3, 1000
        while prec < 10 and j <= self.nr_irqs:
            prec, j = prec + 1, j * 10
        out = [" " * (prec + 8) + "".join(f"CPU{c:<8d}" for c in range(self.nr_cpus)) + "\n"]
        for irq in sorted(set(self._actions) | set(self._counts)):
            counts = self._counts.get(irq, [0] * self.nr_cpus)
            actions = self._actions.get(irq, [])
            if not actions and not any(counts):
                continue
            row = f"{irq:>{prec}d}: " + "".join(f"{n:>10d} " for n in counts)
            row += f" {self.chip:>8s} {irq:>{prec}d}-{'edge':<8s}"
            if actions:
                row += "  " + ", ".join(a.name for a in actions)
            out.append(row + "\n")
        out.append(f"{'ERR':>{prec}s}: {self._spurious:>10d}\n")
        out.append(f"{'MIS':>{prec}s}: {0:>10d}\n")
        return "".join(out)

    def statistics(self) -> IrqStatistics:
        return IrqStatistics(
            raised=self._raised,
            delivered=self._delivered,
            pending=sum(len(p) for p in self._pending),
            coalesced=self._coalesced,
            spurious=self._spurious,
            lines_in_use=len(self._actions),
        )


# ---------------------------------------------------------------------- the actor


@attrs.frozen
class RaiseIrq:
    """A device raises line ``irq`` (posted by the device at the cycle it happens)."""

    irq: int


@attrs.frozen
class RequestIrq:
    """``request_irq(irq, handler, flags, name)``."""

    irq: int
    handler: Hashable
    flags: int = 0
    name: str | None = None


@attrs.frozen
class FreeIrq:
    """``free_irq(irq)``: ``handler`` None frees the line's only handler."""

    irq: int
    handler: Hashable | None = None


class InterruptController(Actor):
    """The interrupt controller unit (``"irq"``): routes raised lines to CPUs.

    A delivery reaches its CPU at the cycle the model says (raise time plus
    ``LatencyConfig.interrupt``, or when the CPU re-enables interrupts) through the machine's
    :class:`~hwsim.core.timer.Timer`: the CPU's actor receives the
    :class:`IrqDelivery` as a message and runs the handlers between two of its accesses.

    Args:
        model: the controller's model.
        timer: the machine's timer.
        cpus: the CPU units, by number (set after construction when they are built later).
    """

    def __init__(
        self,
        model: InterruptControllerModel,
        timer: Timer,
        cpus: Sequence[Actor] = (),
        **kwargs: object,
    ) -> None:
        super().__init__("irq", **kwargs)  # type: ignore[arg-type]
        self.model = model
        self.timer = timer
        self.cpus: Sequence[Actor] = cpus

    def deliver(self, deliveries: Iterable[IrqDelivery]) -> None:
        """Send each delivery to its CPU at its cycle."""
        for d in deliveries:
            self.timer.call_at(d.at, functools.partial(self.cpus[d.cpu].post, d, d.at))

    @handles(RequestIrq)
    def _request(self, msg: RequestIrq, at: int) -> tuple[None, int]:
        if isinstance(msg.flags, bool) or not isinstance(msg.flags, int):
            raise TypeError(f"request_irq flags are an int (IRQF_SHARED), got {msg.flags!r}")
        name = msg.name or getattr(msg.handler, "__name__", None) or repr(msg.handler)
        self.model.request(msg.irq, msg.handler, shared=bool(msg.flags & IRQF_SHARED), name=name)
        return None, at

    @handles(FreeIrq)
    def _free(self, msg: FreeIrq, at: int) -> tuple[None, int]:
        handler = msg.handler
        if handler is None:
            handlers = self.model.handlers(msg.irq)
            if not handlers:
                raise ValueError(f"Trying to free already-free IRQ {msg.irq}")
            if len(handlers) > 1:
                raise ValueError(
                    f"free_irq: IRQ {msg.irq} is shared by {len(handlers)} handlers: say which "
                    "one to free (free_irq(irq, handler))"
                )
            handler = handlers[0]
        self.model.free(msg.irq, handler)
        return None, at

    @handles(RaiseIrq)
    def _raise(self, msg: RaiseIrq, at: int) -> tuple[None, int]:
        if not self.model.handlers(msg.irq):
            # No driver has requested the line: Linux keeps its IO-APIC pin masked (it is
            # unmasked by request_irq, masked again by the last free_irq), so nothing is
            # delivered and nothing counts as spurious.
            return None, at
        self.deliver(self.model.raise_irq(msg.irq, at))
        return None, at

    def statistics(self) -> IrqStatistics:
        return self.model.statistics()
