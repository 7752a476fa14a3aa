"""Kubernetes quantities, one grammar for every tuxio component: "256Mi", "1G", "500m", 1024.

The operator's API types (and so the CRDs' patterns and CEL rules) and the agent's request
models accept exactly the same forms: a decimal number with one of Kubernetes' suffixes that
make sense for memory and CPU (no exponents, no peta or exa). Pure.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

__all__ = ["QUANTITY_PATTERN", "parse_bytes", "parse_quantity"]

_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
}

# The forms above as a JSON schema pattern (the CRDs' and the agent's OpenAPI schema's).
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$"
_QUANTITY = re.compile(QUANTITY_PATTERN)


def parse_quantity(value: object) -> Decimal:
    """An int or a quantity string as an exact decimal ('500m' -> 0.5, '1Ki' -> 1024).

    Raises ValueError with a readable message for anything else."""
    if isinstance(value, bool):
        raise ValueError("expected a number or a quantity such as '256Mi', not a boolean")
    if isinstance(value, int):
        return Decimal(value)
    if not isinstance(value, str):
        raise ValueError("expected a number or a quantity such as '256Mi'")
    text = value.strip()
    match = _QUANTITY.match(text)
    if match is None:
        raise ValueError(f"{value!r} is not a quantity (examples: 268435456, '256Mi', '1G')")
    suffix = match.group(2) or ""
    try:
        return Decimal(text[: len(text) - len(suffix)]) * _SUFFIXES[suffix]
    except InvalidOperation as exc:  # pragma: no cover - the pattern already excludes this
        raise ValueError(f"{value!r} is not a number") from exc


def parse_bytes(value: object) -> int:
    """An int or a quantity string as a whole number of bytes ('256Mi' -> 268435456).

    Raises ValueError with a readable message for anything else, fractions of a byte too."""
    if isinstance(value, bool):
        raise ValueError("expected a byte count or a quantity such as '256Mi', not a boolean")
    if not isinstance(value, int | str):
        raise ValueError("expected a byte count or a quantity such as '256Mi'")
    amount = parse_quantity(value)
    if amount != amount.to_integral_value():
        raise ValueError(f"{value!r} is not a whole number of bytes")
    return int(amount)
