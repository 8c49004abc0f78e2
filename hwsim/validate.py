"""Argument checks shared by the models: misuse fails with a clear TypeError/ValueError."""

from __future__ import annotations


def check_int(what: str, value: object, minimum: int = 0) -> int:
    """Return ``value`` if it is an int (not a bool) and at least ``minimum``.

    Raises:
        TypeError: not an int.
        ValueError: below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} is an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value}")
    return value


def check_bytes(what: str, data: object) -> bytes:
    """Return ``data`` as bytes if it is bytes-like (bytes, bytearray, memoryview).

    A memoryview of wider items is taken as its bytes (``len()`` of the view would count
    items), so sizes computed from the result are byte counts.

    Raises:
        TypeError: not bytes-like.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"{what} must be bytes-like, got {type(data).__name__}")
    return bytes(data)
