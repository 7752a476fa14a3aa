"""Byte quantities as people write them: 268435456, "256Mi", "1G", "1.5Gi"."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

__all__ = ["QUANTITY_PATTERN", "parse_bytes"]

_SUFFIXES: dict[str, int] = {
    "": 1,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}

# The Kubernetes quantity forms that make sense for bytes (no milli, no exponents).
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(k|K|M|G|T|Ki|Mi|Gi|Ti)?$"
_QUANTITY = re.compile(QUANTITY_PATTERN)


def parse_bytes(value: object) -> int:
    """Turn an int or a quantity string into a whole number of bytes.

    Raises ValueError with a readable message for anything else.
    """
    if isinstance(value, bool):
        raise ValueError("expected a byte count or a quantity such as '256Mi', not a boolean")
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a byte count or a quantity such as '256Mi'")
    text = value.strip()
    match = _QUANTITY.match(text)
    if match is None:
        raise ValueError(f"{value!r} is not a byte quantity (examples: 268435456, '256Mi', '1G')")
    suffix = match.group(2) or ""
    number = text[: len(text) - len(suffix)]
    try:
        amount = Decimal(number) * _SUFFIXES[suffix]
    except InvalidOperation as exc:  # pragma: no cover - the pattern already excludes this
        raise ValueError(f"{value!r} is not a number") from exc
    if amount != amount.to_integral_value():
        raise ValueError(f"{value!r} is not a whole number of bytes")
    return int(amount)
