"""Money as an integer number of nano-dollars (10^-9 USD).

Per-token prices go down to 10^-8 USD, so micro-dollars are too coarse and floats drift under
summation. Inside haimaker every amount is a `Nanos` int; the API renders USD floats at the edge,
through exactly the two conversions below.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

Nanos = int
NANOS_PER_USD = 1_000_000_000
_NANO = Decimal(NANOS_PER_USD)


def usd_to_nanos(usd: Decimal | float | int | str) -> Nanos:
    """Convert a USD amount to nano-dollars, rounding half-even once."""
    value = usd if isinstance(usd, Decimal) else Decimal(str(usd))
    return int((value * _NANO).to_integral_value(rounding=ROUND_HALF_EVEN))


def nanos_to_usd(nanos: Nanos) -> float:
    """Render nano-dollars as a USD float for the wire (the only place floats appear)."""
    return nanos / NANOS_PER_USD


def optional_nanos_to_usd(nanos: Nanos | None) -> float | None:
    return None if nanos is None else nanos_to_usd(nanos)
