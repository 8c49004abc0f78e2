"""The address_translation scenario: the facts it is there to show."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from hwsim.scenario import run_scenario

LEVELS = ("PGD", "PUD", "PMD", "PTE")


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    return run_scenario("address_translation", seed=3)


def levels(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["level"] in LEVELS]


def offset_of(rows: list[dict[str, Any]]) -> int:
    (row,) = [r for r in rows if r["level"] == "offset"]
    return int(row["index"], 16)


def test_a_kmalloc_address_is_mapped_by_a_2_mib_pmd_entry_and_agrees_with_virt_to_phys(
    result: dict[str, Any],
) -> None:
    rows = levels(result["x86_64_kmalloc"])
    assert [r["level"] for r in rows] == ["PGD", "PUD", "PMD"]
    assert "PSE" in rows[-1]["flags"].split()
    assert rows[-1]["points_to"].startswith("2 MiB page at ")
    s = result["summary"]
    assert s["x86_64_kmalloc_page_size"] == 2 << 20
    assert s["x86_64_kmalloc_levels_read"] == 3
    assert s["x86_64_kmalloc_phys"] == s["x86_64_virt_to_phys"]
    assert s["x86_64_virt_to_phys_agrees"] is True
    assert s["x86_64_kmalloc_phys"] == hex(int(s["x86_64_kmalloc_vaddr"], 16) - 0xFFFF888000000000)


def test_a_vmalloc_address_needs_all_four_levels_and_a_4_kib_pte(result: dict[str, Any]) -> None:
    rows = levels(result["x86_64_vmalloc"])
    assert [r["level"] for r in rows] == list(LEVELS)
    assert "PSE" not in " ".join(r["flags"] for r in rows).split()
    assert rows[-1]["points_to"].startswith("4 KiB page at ")
    s = result["summary"]
    assert s["x86_64_vmalloc_page_size"] == 4096
    assert s["x86_64_vmalloc_levels_read"] == 4
    assert s["x86_64_vmalloc_to_pfn_agrees"] is True
    assert int(s["x86_64_vmalloc_phys"], 16) >> 12 == s["x86_64_vmalloc_to_pfn"]


@pytest.mark.parametrize("key", ["x86_64_kmalloc", "x86_64_vmalloc"])
def test_each_index_is_the_9_bit_field_of_the_address(result: dict[str, Any], key: str) -> None:
    rows = result[key]
    vaddr = int(result["summary"][f"{key}_vaddr"], 16)
    expected_bits = {"PGD": "47..39", "PUD": "38..30", "PMD": "29..21", "PTE": "20..12"}
    for row in levels(rows):
        shift = int(row["bits"].split("..")[1])
        assert row["bits"] == expected_bits[row["level"]]
        assert row["index"] == (vaddr >> shift) & 0x1FF
        assert int(row["entry_addr"], 16) == int(row["table"], 16) + 8 * row["index"]
    # Each entry points to the next table.
    walk = levels(rows)
    for upper, lower in itertools.pairwise(walk):
        assert upper["points_to"].endswith(lower["table"])
    page_size = result["summary"][f"{key}_page_size"]
    assert offset_of(rows) == vaddr & (page_size - 1)


def test_the_page_after_a_vmalloc_area_is_a_guard_page_that_faults(
    result: dict[str, Any],
) -> None:
    fault = result["x86_64_guard_page_fault"]
    guard = int(result["summary"]["x86_64_guard_page"], 16)
    assert fault.startswith(f"BUG: unable to handle page fault for address: {guard:016x}")
    assert "not-present page" in fault
    assert result["summary"]["x86_64_guard_page_fault_level"] == "PTE"


def test_a_tlb_miss_costs_one_memory_read_per_level_and_a_hit_none(
    result: dict[str, Any],
) -> None:
    s = result["summary"]
    hit = s["x86_64_kmalloc_cycles_tlb_hit"]
    per_level = (s["x86_64_kmalloc_cycles_tlb_miss"] - hit) // 3
    assert per_level > 10 * hit
    assert s["x86_64_kmalloc_cycles_tlb_miss"] == hit + 3 * per_level
    assert s["x86_64_vmalloc_cycles_tlb_miss"] == hit + 4 * per_level


def test_i386_flat_segments_make_the_offset_the_linear_address(result: dict[str, Any]) -> None:
    s = result["summary"]
    assert s["i386_flat_linear_equals_offset"] is True
    assert s["i386_linear"] == s["i386_pointer"]
    steps = {r["step"]: r for r in result["i386_logical_to_linear"]}
    assert steps["selector"]["value"] == "0x0068"  # __KERNEL_DS
    assert steps["base"]["value"] == "0x00000000"
    assert steps["linear"]["value"] == s["i386_pointer"]
    checks = {
        (r["logical"].split(":")[0], r["access"]): r["result"]
        for r in result["i386_segment_checks"]
    }
    assert checks[("__USER_DS", "read, CPL 0")] == f"linear {s['i386_pointer']} == offset"
    assert checks[("__KERNEL_DS", "read, CPL 3")].startswith("general protection fault: 0068")
    assert checks[("__KERNEL_CS", "write, CPL 0")].startswith("general protection fault: 0000")


def test_i386_per_cpu_segment_adds_its_base(result: dict[str, Any]) -> None:
    s = result["summary"]
    base, offset = int(s["i386_percpu_base"], 16), int(s["i386_percpu_offset"], 16)
    assert base != 0
    assert int(s["i386_percpu_linear"], 16) == base + offset
    assert s["i386_percpu_linear_is_base_plus_offset"] is True
    steps = {r["step"]: r for r in result["i386_percpu_segment"]}
    assert steps["selector"]["value"] == "0x00d8"  # __KERNEL_PERCPU
    assert steps["base"]["value"] == s["i386_percpu_base"]


def test_i386_direct_map_is_one_pgd_entry_with_a_4_mib_page(result: dict[str, Any]) -> None:
    s = result["summary"]
    rows = levels(result["i386_paging"])
    assert [r["level"] for r in rows] == ["PGD"]
    assert rows[0]["bits"] == "31..22"
    assert rows[0]["index"] == int(s["i386_linear"], 16) >> 22
    assert "PSE" in rows[0]["flags"].split()
    assert s["i386_kmalloc_page_size"] == 4 << 20
    assert s["i386_kmalloc_levels_read"] == 1
    assert s["i386_virt_to_phys_agrees"] is True
    vrows = levels(result["i386_vmalloc_paging"])
    assert [r["level"] for r in vrows] == ["PGD", "PTE"]
    assert s["i386_vmalloc_page_size"] == 4096
    assert s["i386_vmalloc_to_pfn_agrees"] is True


def test_the_scenario_is_deterministic_for_a_seed(result: dict[str, Any]) -> None:
    assert run_scenario("address_translation", seed=3) == result
