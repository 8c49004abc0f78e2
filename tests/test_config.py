"""MachineConfig: defaults, parsing, and ConfigError naming the field."""

from __future__ import annotations

import attrs
import pytest

import hwsim


def test_the_default_config_is_a_small_x86_64_board() -> None:
    config = hwsim.MachineConfig()
    assert (config.ram, config.cpus, config.arch, config.dma_coherent) == (
        64 << 20,
        2,
        "x86_64",
        False,
    )
    assert config.caches.l2 is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("64MiB", 64 << 20), ("4G", 4 << 30), ("512 MiB", 512 << 20), (1 << 24, 1 << 24)],
)
def test_ram_sizes_parse_in_binary_units(text: object, expected: int) -> None:
    assert hwsim.MachineConfig(ram=text).ram == expected


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"ram": "64MiB+1"}, "ram", "cannot parse"),
        ({"ram": 64 * 1024 * 1024 + 1}, "ram", "multiple of the 4 KiB page size"),
        ({"ram": "1MiB"}, "ram", "at least 8MiB"),
        ({"ram": "128GiB", "arch": "i386", "pae": True}, "ram", "more than i386 can address"),
        ({"cpus": 0}, "cpus", ">= 1"),
        ({"cpus": -2}, "cpus", ">= 1"),
        ({"cpus": 2.0}, "cpus", "must be an int"),
        ({"arch": "arm64"}, "arch", "one of x86_64, i386"),
        ({"seed": -1}, "seed", ">= 0"),
        ({"latency": hwsim.LatencyConfig}, "latency", "must be a LatencyConfig"),
        ({"cma": "64MiB"}, "cma", "leaves no memory"),
        ({"dma_coherent": 1}, "dma_coherent", "True or False"),
        ({"pae": True}, "pae", "i386 paging mode"),
        ({"arch": "i386", "ram": "8GiB"}, "ram", "needs PAE"),
    ],
)
def test_bad_values_raise_config_error_naming_the_field(
    fields: dict[str, object], field: str, words: str
) -> None:
    with pytest.raises(hwsim.ConfigError, match=words) as info:
        hwsim.MachineConfig(**fields)  # type: ignore[arg-type]
    assert info.value.field == field


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: hwsim.LatencyConfig(ram=-1), "latency.ram"),
        (lambda: hwsim.LatencyConfig(ram_bytes_per_cycle=0), "latency.ram_bytes_per_cycle"),
        (lambda: hwsim.TlbConfig(entries=64, ways=3), "tlb.ways"),
        (lambda: hwsim.CacheConfig(line=48), "cache.line"),
        (lambda: hwsim.CacheConfig(size="33KiB"), "cache.size"),
        (lambda: hwsim.DmaConfig(mask_bits=16), "dma.mask_bits"),
        (lambda: hwsim.DebugConfig(failslab_probability=101), "debug.failslab_probability"),
    ],
)
def test_nested_configs_name_the_dotted_field(build: object, field: str) -> None:
    with pytest.raises(hwsim.ConfigError) as info:
        build()  # type: ignore[operator]
    assert info.value.field == field


def test_configs_are_frozen_and_evolve_revalidates() -> None:
    config = hwsim.MachineConfig(cpus=4)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.cpus = 8  # type: ignore[misc]
    assert config.evolve(cpus=8).cpus == 8
    with pytest.raises(hwsim.ConfigError):
        config.evolve(cpus=0)


def test_a_config_error_is_also_a_value_error() -> None:
    with pytest.raises(ValueError):
        hwsim.MachineConfig(arch="sparc")
