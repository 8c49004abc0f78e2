"""The interrupt controller model: request_irq's rules, routing, masking with pending
delivery, and /proc/interrupts."""

from __future__ import annotations

import pytest

from hwsim.devices.irq import X86_EFLAGS_IF, InterruptControllerModel, IrqBusy, IrqDelivery
from hwsim.errors import HwsimError


def test_a_requested_line_delivers_to_its_handlers_after_the_interrupt_latency() -> None:
    pic = InterruptControllerModel(2, latency=200)
    pic.request(11, "dma")
    assert pic.raise_irq(11, at=1000) == [IrqDelivery(11, 0, 1000, 1200, ("dma",))]
    assert pic.counts(11) == (1, 0)


def test_requesting_an_exclusive_line_twice_fails_with_ebusy() -> None:
    pic = InterruptControllerModel(2)
    pic.request(5, "first")
    with pytest.raises(IrqBusy, match=r"request_irq: IRQ 5 is already in use \(not shared\)"):
        pic.request(5, "second")
    assert issubclass(IrqBusy, HwsimError) and IrqBusy.errno == -16
    assert pic.handlers(5) == ("first",)


def test_a_shared_request_on_an_exclusive_line_fails_too() -> None:
    pic = InterruptControllerModel(2)
    pic.request(5, "first")
    with pytest.raises(IrqBusy, match=r"Flags mismatch irq 5\. 00000080 \(second\)"):
        pic.request(5, "second", shared=True)


def test_shared_handlers_all_run_in_request_order() -> None:
    pic = InterruptControllerModel(1)
    pic.request(9, "a", shared=True)
    pic.request(9, "b", shared=True)
    assert pic.raise_irq(9, at=0)[0].handlers == ("a", "b")
    pic.free(9, "a")
    assert pic.raise_irq(9, at=0)[0].handlers == ("b",)


def test_freeing_a_handler_that_is_not_installed_is_refused() -> None:
    pic = InterruptControllerModel(1)
    pic.request(3, "h")
    pic.free(3, "h")
    with pytest.raises(ValueError, match="Trying to free already-free IRQ 3"):
        pic.free(3, "h")
    pic.request(3, "other")  # the line is free again


def test_a_line_that_does_not_exist_is_refused() -> None:
    pic = InterruptControllerModel(1, nr_irqs=16)
    with pytest.raises(ValueError, match="IRQ 16 does not exist"):
        pic.request(16, "h")


def test_an_interrupt_without_a_handler_is_spurious() -> None:
    pic = InterruptControllerModel(1)
    assert pic.raise_irq(7, at=0)[0].handlers == ()
    assert pic.statistics().spurious == 1
    assert "ERR:          1\n" in pic.render_interrupts()


def test_affinity_routes_a_line_to_the_chosen_cpus() -> None:
    pic = InterruptControllerModel(4)
    pic.request(4, "h")
    pic.set_affinity(4, [2, 3])
    assert [pic.raise_irq(4, at=0)[0].cpu for _ in range(3)] == [2, 2, 2]
    rr = InterruptControllerModel(4, policy="round_robin")
    rr.request(4, "h")
    rr.set_affinity(4, [3, 1])
    assert [rr.raise_irq(4, at=0)[0].cpu for _ in range(3)] == [1, 3, 1]
    with pytest.raises(ValueError, match="no CPU 4"):
        pic.set_affinity(4, [4])


def test_an_interrupt_raised_while_masked_is_delivered_on_restore() -> None:
    pic = InterruptControllerModel(2, latency=10)
    pic.request(11, "dma")
    flags = pic.local_irq_save(0)
    assert flags == X86_EFLAGS_IF and pic.irqs_disabled(0)
    assert pic.raise_irq(11, at=100) == []
    assert pic.pending(0) == (11,) and pic.counts(11) == (0, 0)
    assert pic.local_irq_restore(0, flags, at=500) == [IrqDelivery(11, 0, 100, 500, ("dma",))]
    assert pic.counts(11) == (1, 0) and pic.pending(0) == ()


def test_nested_irq_save_delivers_only_at_the_outermost_restore() -> None:
    pic = InterruptControllerModel(1)
    pic.request(1, "h")
    outer = pic.local_irq_save(0)
    inner = pic.local_irq_save(0)
    pic.raise_irq(1, at=0)
    assert inner == 0 and pic.local_irq_restore(0, inner) == []
    assert [d.irq for d in pic.local_irq_restore(0, outer)] == [1]


def test_an_edge_raised_twice_while_masked_is_delivered_once() -> None:
    pic = InterruptControllerModel(1)
    pic.request(1, "h")
    pic.request(2, "g")
    flags = pic.local_irq_save(0)
    for irq in (2, 1, 2):
        pic.raise_irq(irq, at=0)
    assert [d.irq for d in pic.local_irq_restore(0, flags)] == [2, 1]
    assert pic.statistics().coalesced == 1 and pic.statistics().delivered == 2


def test_masking_one_cpu_does_not_hold_interrupts_routed_to_another() -> None:
    pic = InterruptControllerModel(2)
    pic.request(6, "h")
    pic.set_affinity(6, [1])
    pic.local_irq_save(0)
    assert pic.raise_irq(6, at=0)[0].cpu == 1


def test_proc_interrupts_looks_like_linuxs_on_x86() -> None:
    pic = InterruptControllerModel(2)
    pic.request(1, "kbd", name="i8042")
    pic.request(11, "usb", shared=True, name="ehci_hcd:usb1")
    pic.request(11, "nic", shared=True, name="eth0")
    pic.request(20, "idle", name="idle")  # requested, never raised: still shown
    for _ in range(9):
        pic.raise_irq(1, at=0)
    pic.set_affinity(11, [1])
    pic.raise_irq(11, at=0)
    assert pic.render_interrupts() == (
        "           CPU0       CPU1       \n"
        "  1:          9          0   IO-APIC   1-edge      i8042\n"
        " 11:          0          1   IO-APIC  11-edge      ehci_hcd:usb1, eth0\n"
        " 20:          0          0   IO-APIC  20-edge      idle\n"
        "ERR:          0\n"
        "MIS:          0\n"
    )
