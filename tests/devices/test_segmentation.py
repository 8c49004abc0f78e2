"""i386 segmentation: descriptors in RAM, selector:offset to linear, the #GP/#NP checks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import hwsim
from hwsim.devices.mmu import GeneralProtectionFault
from hwsim.devices.ram import RamModel
from hwsim.devices.segmentation import (
    __KERNEL_CS,
    __KERNEL_DS,
    __KERNEL_PERCPU,
    __USER_CS,
    __USER_DS,
    DESC_CODE32,
    DESC_DATA32,
    GDT_ENTRY_KERNEL_CS,
    GDT_ENTRY_KERNEL_DS,
    GDT_ENTRY_PERCPU,
    GDT_SIZE,
    Segmentation,
    SegmentDescriptor,
    SegmentFault,
    SegmentNotPresent,
    decode_descriptor,
    encode_descriptor,
    gdt_bytes,
    gdt_entry,
    linux_i386_gdt,
    make_selector,
)

GDT = 0x2000
FREE = 20  # a GDT slot Linux leaves for PnP BIOS; the tests put their own segments there


def machine_with(extra: dict[int, bytes] | None = None) -> tuple[RamModel, Segmentation]:
    ram = RamModel(size=1 << 20)
    ram.write(GDT, gdt_bytes(linux_i386_gdt()))
    for index, raw in (extra or {}).items():
        ram.write(GDT + index * 8, raw)
    return ram, Segmentation(ram, gdt_base=GDT, gdt_limit=GDT_SIZE - 1)


descriptors = st.builds(
    SegmentDescriptor,
    base=st.integers(0, 2**32 - 1),
    limit=st.integers(0, 2**20 - 1),
    type=st.integers(0, 15),
    s=st.booleans(),
    dpl=st.integers(0, 3),
    present=st.booleans(),
    avl=st.booleans(),
    long=st.booleans(),
    db=st.booleans(),
    granularity=st.booleans(),
)


@given(descriptors)
def test_a_descriptor_decodes_to_the_fields_it_was_encoded_from(d: SegmentDescriptor) -> None:
    raw = d.encode()
    assert len(raw) == 8
    assert decode_descriptor(raw) == d
    assert int.from_bytes(raw, "little") == gdt_entry(d.flags, d.base, d.limit)


@given(
    base=st.integers(0, 2**32 - 1),
    limit=st.integers(0, 2**20 - 1),
    code=st.booleans(),
    dpl=st.integers(0, 3),
    granularity=st.booleans(),
)
def test_encode_descriptor_round_trips_base_limit_and_kind(
    base: int, limit: int, code: bool, dpl: int, granularity: bool
) -> None:
    d = decode_descriptor(
        encode_descriptor(base, limit, code=code, dpl=dpl, granularity=granularity)
    )
    assert (d.base, d.limit, d.dpl, d.granularity) == (base, limit, dpl, granularity)
    assert d.is_code == code and d.present and d.s
    assert d.writable == (not code) and d.readable


def test_the_base_and_limit_are_split_over_the_descriptor_as_the_sdm_draws_it() -> None:
    raw = encode_descriptor(0x12345678, 0xABCDE, code=False)
    assert raw[0:2] == bytes.fromhex("DEBC")  # limit 15..0
    assert raw[2:5] == bytes.fromhex("785634")  # base 23..0
    assert raw[5] == 0x93  # P, DPL 0, S, data read/write accessed
    assert raw[6] == 0xCA  # G, D/B, limit 19..16
    assert raw[7] == 0x12  # base 31..24


def test_linux_i386_gdt_is_linux_gdt_page() -> None:
    gdt = linux_i386_gdt()
    # arch/x86/include/asm/segment.h: entries 12..15; the selectors' values.
    assert (__KERNEL_CS, __KERNEL_DS, __USER_CS, __USER_DS) == (0x60, 0x68, 0x73, 0x7B)
    assert gdt[GDT_ENTRY_KERNEL_CS].flags == DESC_CODE32 == 0xC09B
    assert gdt[GDT_ENTRY_KERNEL_DS].flags == DESC_DATA32 == 0xC093
    for selector in (__KERNEL_CS, __KERNEL_DS, __USER_CS, __USER_DS):
        d = gdt[selector >> 3]
        assert (d.base, d.effective_limit) == (0, 0xFFFFFFFF)
        assert d.dpl == selector & 3
    assert gdt[GDT_ENTRY_PERCPU].base == 0
    assert linux_i386_gdt(percpu_offset=0x1000)[GDT_ENTRY_PERCPU].base == 0x1000


@given(offset=st.integers(0, 2**32 - 1))
def test_in_linux_flat_segments_the_linear_address_is_the_offset(offset: int) -> None:
    _, seg = machine_with()
    for selector in (__KERNEL_DS, __USER_DS):
        assert seg.logical_to_linear(selector, offset).linear == offset
    assert seg.logical_to_linear(__USER_DS, offset, cpl=3, write=True).linear == offset
    assert seg.logical_to_linear(__KERNEL_CS, offset, execute=True).flat


def test_a_segment_with_a_base_adds_it_to_the_offset() -> None:
    raw = encode_descriptor(0x100000, 0xFFFF, code=False, granularity=False)
    _, seg = machine_with({FREE: raw})
    t = seg.logical_to_linear(FREE << 3, 0x1234)
    assert t.linear == 0x101234 and not t.flat
    assert t.descriptor_address == GDT + FREE * 8
    assert t.raw == raw
    assert [s["step"] for s in t.steps()] == [
        "selector",
        "descriptor address",
        "descriptor",
        "base",
        "limit check",
        "linear",
    ]


def test_the_linear_address_wraps_at_4_gib() -> None:
    _, seg = machine_with()
    ram = seg.ram
    ram.write(
        GDT + GDT_ENTRY_PERCPU * 8,
        gdt_entry(DESC_DATA32, 0xFFFFF000, 0xFFFFF).to_bytes(8, "little"),
    )
    assert seg.logical_to_linear(__KERNEL_PERCPU, 0x2000).linear == 0x1000


def test_descriptors_are_read_from_ram_every_time() -> None:
    ram, seg = machine_with()
    assert seg.logical_to_linear(__KERNEL_DS, 0x10).linear == 0x10
    ram.write(
        GDT + GDT_ENTRY_KERNEL_DS * 8, gdt_entry(DESC_DATA32, 0x4000, 0xFFFFF).to_bytes(8, "little")
    )
    assert seg.logical_to_linear(__KERNEL_DS, 0x10).linear == 0x4010
    ram.write(GDT + GDT_ENTRY_KERNEL_DS * 8, bytes(8))
    with pytest.raises(SegmentFault, match="not a code or data segment"):
        seg.logical_to_linear(__KERNEL_DS, 0x10)


def test_the_gdt_can_be_reached_through_paging() -> None:
    ram = RamModel(size=1 << 20)
    ram.write(0x5000, gdt_bytes(linux_i386_gdt(percpu_offset=0x300)))
    seg = Segmentation(
        ram, gdt_base=0xC0001000, gdt_limit=GDT_SIZE - 1, translate=lambda la: la - 0xBFFFC000
    )
    t = seg.logical_to_linear(__KERNEL_PERCPU, 0x5)
    assert (t.descriptor_address, t.descriptor_phys, t.linear) == (
        0xC0001000 + GDT_ENTRY_PERCPU * 8,
        0x5000 + GDT_ENTRY_PERCPU * 8,
        0x305,
    )


def test_a_null_selector_is_a_general_protection_fault() -> None:
    _, seg = machine_with()
    for null in (0, 1, 2, 3):
        with pytest.raises(GeneralProtectionFault, match="null selector") as info:
            seg.logical_to_linear(null, 0)
        assert isinstance(info.value, hwsim.SegmentationFault)
        assert str(info.value).startswith("general protection fault: 0000 [#1]")


def test_an_index_beyond_the_gdt_limit_faults_with_the_selector_as_error_code() -> None:
    _, seg = machine_with()
    with pytest.raises(SegmentFault, match="beyond the GDT limit 0xff") as info:
        seg.logical_to_linear(make_selector(32), 0)
    assert info.value.error_code == 0x100
    with pytest.raises(SegmentFault, match="no LDT"):
        seg.logical_to_linear(make_selector(1, ldt=True), 0)


def test_an_offset_beyond_the_limit_faults() -> None:
    raw = encode_descriptor(0, 0xFFF, code=False, granularity=False)
    _, seg = machine_with({FREE: raw})
    assert seg.logical_to_linear(FREE << 3, 0xFFC, size=4).linear == 0xFFC
    with pytest.raises(SegmentFault, match=r"offset 0xffd\+4 beyond the limit 0xfff") as info:
        seg.logical_to_linear(FREE << 3, 0xFFD, size=4)
    assert (info.value.reason, info.value.error_code) == ("limit", 0)
    # With G set the same limit covers 16 MiB.
    _, seg = machine_with({FREE: encode_descriptor(0, 0xFFF, code=False)})
    assert seg.logical_to_linear(FREE << 3, 0xFFFFFF).linear == 0xFFFFFF
    with pytest.raises(SegmentFault, match="limit"):
        seg.logical_to_linear(FREE << 3, 0x1000000)


def test_an_expand_down_segment_allows_only_offsets_above_its_limit() -> None:
    raw = encode_descriptor(0, 0xFFF, code=False, granularity=False, expand_down=True)
    _, seg = machine_with({FREE: raw})
    assert seg.logical_to_linear(FREE << 3, 0x1000).linear == 0x1000
    with pytest.raises(SegmentFault, match="expand-down"):
        seg.logical_to_linear(FREE << 3, 0xFFF)


def test_privilege_and_type_violations_are_general_protection_faults() -> None:
    _, seg = machine_with()
    with pytest.raises(SegmentFault, match=r"max\(CPL 3, RPL 0\) > DPL 0") as info:
        seg.logical_to_linear(__KERNEL_DS, 0x1000, cpl=3)
    assert info.value.error_code == __KERNEL_DS
    with pytest.raises(SegmentFault, match=r"max\(CPL 0, RPL 3\) > DPL 0"):
        seg.logical_to_linear(__KERNEL_DS | 3, 0x1000)
    with pytest.raises(SegmentFault, match="a code segment is never writable"):
        seg.logical_to_linear(__KERNEL_CS, 0x1000, write=True)
    with pytest.raises(SegmentFault, match="not a code segment"):
        seg.logical_to_linear(__KERNEL_DS, 0x1000, execute=True)
    with pytest.raises(SegmentFault, match=r"CPL 3, RPL 3: not DPL 0"):
        seg.logical_to_linear(__KERNEL_CS | 3, 0x1000, execute=True, cpl=3)
    read_only = encode_descriptor(0, 0xFFFFF, code=False, writable=False)
    _, seg = machine_with({FREE: read_only})
    assert seg.logical_to_linear(FREE << 3, 0x10).linear == 0x10
    with pytest.raises(SegmentFault, match="read-only"):
        seg.logical_to_linear(FREE << 3, 0x10, write=True)


def test_a_segment_that_is_not_present_is_np_not_gp() -> None:
    raw = encode_descriptor(0, 0xFFFFF, code=False, present=False)
    _, seg = machine_with({FREE: raw})
    with pytest.raises(SegmentNotPresent, match="segment not present: 00a0") as info:
        seg.logical_to_linear(FREE << 3, 0)
    assert isinstance(info.value, hwsim.SegmentationFault)
    assert not isinstance(info.value, GeneralProtectionFault)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda seg: seg.logical_to_linear("0x68", 0), TypeError),
        (lambda seg: seg.logical_to_linear(__KERNEL_DS, 1.5), TypeError),
        (lambda seg: seg.logical_to_linear(__KERNEL_DS, 2**32), ValueError),
        (lambda seg: seg.logical_to_linear(0x10000, 0), ValueError),
        (lambda seg: seg.logical_to_linear(__KERNEL_DS, 0, cpl=4), ValueError),
        (lambda seg: seg.logical_to_linear(__KERNEL_DS, 0, write=1), TypeError),
        (lambda seg: seg.logical_to_linear(__KERNEL_CS, 0, write=True, execute=True), ValueError),
        (lambda seg: seg.logical_to_linear(__KERNEL_DS, 0, size=0), ValueError),
    ],
)
def test_bad_arguments_raise_type_or_value_errors(call: object, error: type[Exception]) -> None:
    _, seg = machine_with()
    with pytest.raises(error):
        call(seg)  # type: ignore[operator]


def test_bad_descriptor_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bits"):
        encode_descriptor(2**32, 0, code=False)
    with pytest.raises(ValueError, match="20 bits"):
        encode_descriptor(0, 2**20, code=False)
    with pytest.raises(ValueError, match="2 bits"):
        encode_descriptor(0, 0, code=True, dpl=4)
    with pytest.raises(TypeError):
        encode_descriptor(0, 0, code=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="data-segment options"):
        encode_descriptor(0, 0, code=True, expand_down=True)
    with pytest.raises(ValueError, match="8 bytes"):
        decode_descriptor(b"\0" * 7)
    with pytest.raises(TypeError):
        decode_descriptor(0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bits 8-11"):
        gdt_entry(0x0F00, 0, 0)
    with pytest.raises(TypeError):
        Segmentation(bytearray(10), 0, 0)  # type: ignore[arg-type]
