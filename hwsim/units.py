"""Sizes, page arithmetic and the constants every layer shares (x86, 4 KiB pages)."""

from __future__ import annotations

import re

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = ~(PAGE_SIZE - 1)

_UNITS = {
    "": 1,
    "B": 1,
    "K": 1 << 10,
    "KB": 1 << 10,
    "KIB": 1 << 10,
    "M": 1 << 20,
    "MB": 1 << 20,
    "MIB": 1 << 20,
    "G": 1 << 30,
    "GB": 1 << 30,
    "GIB": 1 << 30,
    "T": 1 << 40,
    "TB": 1 << 40,
    "TIB": 1 << 40,
}
# Binary units throughout, as the kernel's own "mem=" and "cma=" boot parameters read them:
# "64M" and "64MB" both mean 64 MiB.
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([A-Za-z]*)\s*$")


def parse_size(value: int | str) -> int:
    """Turn ``4096``, ``"64MiB"``, ``"4G"`` or ``"512 KiB"`` into a number of bytes.

    Units are binary (K = 1024), as in the kernel's ``mem=``/``cma=`` boot parameters.

    Raises:
        ValueError: the value is negative, not an integer, or its unit is unknown.

    >>> parse_size("64MiB")
    67108864
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value}")
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match is not None:
            unit = match.group(2).upper()
            if unit in _UNITS:
                return int(match.group(1)) * _UNITS[unit]
        raise ValueError(f"cannot parse {value!r} as a size (examples: 4096, '64MiB', '4G')")
    raise ValueError(f"expected a size as int or str, got {type(value).__name__}")


def format_size(nbytes: int) -> str:
    """The shortest exact binary spelling of a size: ``format_size(65536) == "64KiB"``."""
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= factor and nbytes % factor == 0:
            return f"{nbytes // factor}{unit}"
    return f"{nbytes}B"


def pfn_of(phys: int) -> int:
    """The page frame number holding physical address ``phys`` (``PHYS_PFN``)."""
    return phys >> PAGE_SHIFT


def pfn_to_phys(pfn: int) -> int:
    """The physical address where page frame ``pfn`` starts (``PFN_PHYS``)."""
    return pfn << PAGE_SHIFT
