"""The interrupt controller wired into a machine: DMA completions reach handlers on the
routed CPU, between its accesses, masked by local_irq_save, through request_irq/free_irq."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import numpy as np
import pytest

import hwsim
from hwsim.devices.cpu import current_irq
from hwsim.devices.dma import DmaTransfer
from hwsim.devices.irq import IRQF_SHARED, IrqDelivery

Handler = Callable[[int], Awaitable[None]]


async def small_transfer(machine: hwsim.Machine, size: int = 256) -> DmaTransfer:
    """A memcpy between two kmalloc buffers: what a driver starts to get an interrupt."""
    k = machine.kernel
    src = await k.kmalloc(size)
    dst = await k.kmalloc(size)
    return await machine.dma.memcpy(k.virt_to_phys(dst), k.virt_to_phys(src), size)


def recorder(machine: hwsim.Machine, log: list[tuple[int, IrqDelivery | None]]) -> Handler:
    async def handler(irq: int) -> None:
        log.append((machine.now, current_irq()))

    return handler


@pytest.mark.machine(cpus=2)
async def test_the_dma_completion_handler_runs_on_the_routed_cpu_at_done_plus_the_latency(
    machine: hwsim.Machine,
) -> None:
    log: list[tuple[int, IrqDelivery | None]] = []
    await machine.kernel.request_irq(machine.dma.irq, recorder(machine, log), name="mydma")
    transfer = await small_transfer(machine)
    await transfer.wait()
    assert log == []  # the interrupt is still on its way
    await hwsim.sleep(machine.config.latency.interrupt + 1000)
    ((when, delivery),) = log
    assert delivery is not None
    assert when == transfer.done + machine.config.latency.interrupt
    assert (delivery.irq, delivery.cpu, delivery.raised, delivery.at) == (
        machine.dma.irq,
        0,
        transfer.done,
        when,
    )
    assert machine.stats()["cpu0"]["interrupts"] == 1
    assert machine.stats()["cpu1"]["interrupts"] == 0
    assert current_irq() is None  # outside the handler


@pytest.mark.machine(cpus=2)
async def test_a_line_routed_to_cpu1_runs_its_handler_on_cpu1(machine: hwsim.Machine) -> None:
    machine.irq.model.set_affinity(machine.dma.irq, [1])
    buf = await machine.kernel.kzalloc(64)
    seen: list[tuple[int, bytes]] = []

    async def handler(irq: int) -> None:
        delivery = current_irq()
        assert delivery is not None
        # The handler runs in cpu1's own task: its accesses must not queue behind itself.
        seen.append((delivery.cpu, await machine.cpus[1].load(buf, 4)))

    await machine.kernel.request_irq(machine.dma.irq, handler)
    loads = machine.cpus[1].statistics().loads
    await (await small_transfer(machine)).wait()
    await hwsim.sleep(10_000)
    assert seen == [(1, b"\0" * 4)]
    assert machine.cpus[1].statistics().loads == loads + 1
    assert (machine.stats()["cpu0"]["interrupts"], machine.stats()["cpu1"]["interrupts"]) == (0, 1)
    assert machine.irq.model.counts(machine.dma.irq) == (0, 1)


@pytest.mark.machine(cpus=2)
async def test_a_cpu_busy_with_a_batched_access_finishes_it_before_taking_the_interrupt(
    machine: hwsim.Machine,
) -> None:
    k = machine.kernel
    cpu = machine.cpus[0]
    scratch = await k.kzalloc(64)
    big = await k.kmalloc(256 << 10)
    starts: list[int] = []
    stored_at: list[int] = []

    async def handler(irq: int) -> None:
        starts.append(cpu.issue_cycle())
        await cpu.store(scratch, b"irq!")
        stored_at.append(cpu.cycle)

    await k.request_irq(machine.dma.irq, handler)
    transfer = await small_transfer(machine)
    batch = await cpu.access(np.arange(0, 256 << 10, 64), base=big)
    await hwsim.sleep(10_000)
    # The interrupt reached the CPU in the middle of the batch ...
    assert transfer.done + machine.config.latency.interrupt < batch.done
    # ... and its handler started only when the batch was done.
    assert len(starts) == 1 and starts[0] >= batch.done
    assert stored_at[0] > batch.done
    assert cpu.peek(scratch, 4) == b"irq!"


@pytest.mark.machine(cpus=2)
async def test_a_transfer_started_by_a_handler_does_not_start_before_the_handler_runs(
    machine: hwsim.Machine,
) -> None:
    # A completion handler that programs the next transfer (a driver's usual pattern). The
    # CPU takes the interrupt only after its batch; the device cannot be programmed earlier.
    k = machine.kernel
    cpu = machine.cpus[0]
    big = await k.kmalloc(256 << 10)
    src = await k.kmalloc(256)
    dst = await k.kmalloc(256)
    handler_start: list[int] = []
    handler_now: list[int] = []
    next_transfers: list[DmaTransfer] = []

    async def handler(irq: int) -> None:
        if next_transfers:
            return
        handler_start.append(cpu.issue_cycle())
        handler_now.append(machine.now)
        next_transfers.append(
            await machine.dma.memcpy(k.virt_to_phys(src), k.virt_to_phys(dst), 64)
        )

    await k.request_irq(machine.dma.irq, handler)
    await machine.dma.memcpy(k.virt_to_phys(dst), k.virt_to_phys(src), 256)
    batch = await cpu.access(np.arange(0, 256 << 10, 64), base=big)
    await hwsim.sleep(10_000)
    (second,) = next_transfers
    assert handler_start[0] >= batch.done
    assert second.record.start >= handler_start[0], (
        f"the handler runs from cycle {handler_start[0]} but the transfer it started began at "
        f"cycle {second.record.start} and completed at {second.done}"
    )
    assert handler_now[0] >= handler_start[0], "virtual time inside the handler is in its past"


@pytest.mark.machine(cpus=2)
async def test_an_interrupt_raised_while_masked_runs_its_handler_at_local_irq_restore(
    machine: hwsim.Machine,
) -> None:
    log: list[tuple[int, IrqDelivery | None]] = []
    await machine.kernel.request_irq(machine.dma.irq, recorder(machine, log))
    cpu = machine.cpus[0]
    flags = cpu.local_irq_save()
    assert cpu.irqs_disabled() and not machine.cpus[1].irqs_disabled()
    transfer = await small_transfer(machine)
    await transfer.wait()
    await hwsim.sleep(10_000)
    assert log == []
    assert machine.irq.model.pending(0) == (machine.dma.irq,)
    assert machine.stats()["cpu0"]["interrupts"] == 0
    restored_at = machine.now
    cpu.local_irq_restore(flags)
    assert not cpu.irqs_disabled()
    await hwsim.sleep(1000)
    ((when, delivery),) = log
    assert when == restored_at
    assert delivery is not None and delivery.raised == transfer.done and delivery.cpu == 0
    assert machine.irq.model.pending(0) == ()
    assert machine.stats()["cpu0"]["interrupts"] == 1


@pytest.mark.machine(cpus=2)
async def test_two_completions_while_masked_coalesce_into_one_delivery(
    machine: hwsim.Machine,
) -> None:
    log: list[tuple[int, IrqDelivery | None]] = []
    await machine.kernel.request_irq(machine.dma.irq, recorder(machine, log))
    flags = machine.cpus[0].local_irq_save()
    first = await small_transfer(machine)
    second = await small_transfer(machine)
    await first.wait()
    await second.wait()
    await hwsim.sleep(1000)
    machine.cpus[0].local_irq_restore(flags)
    await hwsim.sleep(1000)
    assert len(log) == 1
    stats = machine.stats()["irq"]
    assert (stats["raised"], stats["delivered"], stats["coalesced"]) == (2, 1, 1)
    assert machine.stats()["cpu0"]["interrupts"] == 1


@pytest.mark.machine(cpus=2)
async def test_a_second_handler_on_an_exclusive_line_gets_ebusy_and_changes_nothing(
    machine: hwsim.Machine,
) -> None:
    first: list[tuple[int, IrqDelivery | None]] = []
    second: list[tuple[int, IrqDelivery | None]] = []
    irq = machine.dma.irq
    await machine.kernel.request_irq(irq, recorder(machine, first), name="first")
    before = machine.proc.read("interrupts")
    intruder = recorder(machine, second)
    with pytest.raises(hwsim.IrqBusy, match=r"-EBUSY") as info:
        await machine.kernel.request_irq(irq, intruder, name="second")
    assert info.value.errno == -16
    with pytest.raises(hwsim.IrqBusy):  # asking to share does not help: the first did not
        await machine.kernel.request_irq(irq, intruder, IRQF_SHARED, name="second")
    assert machine.proc.read("interrupts") == before
    assert len(machine.irq.model.handlers(irq)) == 1
    await (await small_transfer(machine)).wait()
    await hwsim.sleep(1000)
    assert len(first) == 1 and second == []


@pytest.mark.machine(cpus=2)
async def test_irqf_shared_lets_two_handlers_share_the_line_in_request_order(
    machine: hwsim.Machine,
) -> None:
    order: list[str] = []

    def named(name: str) -> Handler:
        async def handler(irq: int) -> None:
            order.append(name)

        return handler

    irq = machine.dma.irq
    a, b = named("a"), named("b")
    await machine.kernel.request_irq(irq, a, IRQF_SHARED, name="eth0")
    await machine.kernel.request_irq(irq, b, IRQF_SHARED, name="usb1")
    await (await small_transfer(machine)).wait()
    await hwsim.sleep(1000)
    assert order == ["a", "b"]
    assert machine.stats()["cpu0"]["interrupts"] == 1  # one delivery runs both
    with pytest.raises(ValueError, match="shared by 2 handlers"):
        await machine.kernel.free_irq(irq)
    await machine.kernel.free_irq(irq, a)
    await (await small_transfer(machine)).wait()
    await hwsim.sleep(1000)
    assert order == ["a", "b", "b"]


@pytest.mark.machine(cpus=2)
async def test_free_irq_of_a_free_line_raises_and_a_freed_handler_no_longer_runs(
    machine: hwsim.Machine,
) -> None:
    irq = machine.dma.irq
    with pytest.raises(ValueError, match=f"Trying to free already-free IRQ {irq}"):
        await machine.kernel.free_irq(irq)
    log: list[tuple[int, IrqDelivery | None]] = []
    handler = recorder(machine, log)
    await machine.kernel.request_irq(irq, handler)
    await machine.kernel.free_irq(irq)
    with pytest.raises(ValueError, match="already-free IRQ"):
        await machine.kernel.free_irq(irq, handler)
    await (await small_transfer(machine)).wait()
    await hwsim.sleep(1000)
    assert log == []
    await machine.kernel.request_irq(irq, handler)  # the line is free again
    assert machine.stats()["irq"]["lines_in_use"] == 1


class Oops(Exception):
    pass


async def raise_oops(machine: hwsim.Machine) -> None:
    raise Oops("BUG in the interrupt handler")


async def load_null(machine: hwsim.Machine) -> None:
    await machine.cpus[0].load(0, 8)  # a NULL pointer dereference in interrupt context


@pytest.mark.hwsim
@pytest.mark.parametrize("body", [raise_oops, load_null], ids=["exception", "segfault"])
async def test_an_exception_in_a_handler_stops_the_machine_with_actor_crashed_naming_the_cpu(
    body: Callable[[hwsim.Machine], Awaitable[None]],
) -> None:
    with pytest.raises(hwsim.ActorCrashed, match="'cpu0'"):
        async with hwsim.boot(hwsim.MachineConfig(cpus=2)) as m:

            async def handler(irq: int) -> None:
                await body(m)

            await m.kernel.request_irq(m.dma.irq, handler)
            await (await small_transfer(m)).wait()
            await hwsim.sleep(10_000)


@pytest.mark.machine(cpus=2)
async def test_a_handler_can_load_store_and_call_kernel_services(
    machine: hwsim.Machine,
) -> None:
    k = machine.kernel
    cpu = machine.cpus[0]
    done: list[bytes] = []
    victim = await k.kmalloc(128)

    async def handler(irq: int) -> None:
        buf = await k.kmalloc(64)
        await cpu.store(buf, b"from irq")
        done.append(await cpu.load(buf, 8))
        await k.kfree(buf)
        await k.kfree(victim)

    await k.request_irq(machine.dma.irq, handler)
    frees = machine.stats()["slab"]["frees"]
    await (await small_transfer(machine)).wait()
    await hwsim.sleep(10_000)
    assert done == [b"from irq"]
    assert machine.stats()["slab"]["frees"] == frees + 2
    with pytest.raises(hwsim.DoubleFree):  # the handler really freed it
        await k.kfree(victim)
    # The CPU still works after the handler.
    buf = await k.kmalloc(8)
    await cpu.store(buf, b"ok")
    assert await cpu.load(buf, 2) == b"ok"


@pytest.mark.machine(cpus=2)
async def test_proc_interrupts_shows_the_handled_completions_and_the_handlers_name(
    machine: hwsim.Machine,
) -> None:
    async def handler(irq: int) -> None:
        pass

    await machine.kernel.request_irq(machine.dma.irq, handler, name="hwsim-dma")
    for _ in range(3):
        await (await small_transfer(machine)).wait()
    await hwsim.sleep(1000)
    rows = machine.proc.read("interrupts").splitlines()
    assert rows[0].split() == ["CPU0", "CPU1"]
    assert " 11:          3          0   IO-APIC  11-edge      hwsim-dma" in rows
    assert machine.stats()["cpu0"]["interrupts"] == 3
    assert machine.stats()["irq"]["spurious"] == 0


@pytest.mark.machine(cpus=1)
async def test_the_same_handler_requested_twice_on_an_exclusive_line_is_ebusy(
    machine: hwsim.Machine,
) -> None:
    async def handler(irq: int) -> None:
        pass

    await machine.kernel.request_irq(5, handler)
    with pytest.raises(hwsim.IrqBusy, match="-EBUSY"):
        await machine.kernel.request_irq(5, handler)
    assert machine.irq.model.handlers(5) == (handler,)
