"""How an amount of money reads in the admin UI: the one formatter of every page, table, chart and tooltip.

Invariant: the same nano-dollar amount reads the same everywhere (`$1,234.56`). Cents, with thousands separators,
for any amount from a cent up; a non-zero amount under a cent keeps two significant digits (`$0.00012`,
`$0.000000015`), because LLM requests often cost fractions of a cent and must never read as `$0.00` (free).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Final

from haimaker.money import NANOS_PER_USD, Nanos

_CENT: Final = Decimal("0.01")
_SIGNIFICANT_UNDER_A_CENT: Final = 2


def format_usd(nanos: Nanos) -> str:
    """`$1,234.56`; a non-zero amount under a cent with two significant digits (`$0.00012`)."""
    usd = Decimal(nanos) / NANOS_PER_USD
    if usd == 0 or abs(usd) >= _CENT:
        return _signed(f"{abs(usd).quantize(_CENT, rounding=ROUND_HALF_UP):,}", usd)
    # The exponent of the first significant digit (-4 for 0.00012) decides how many decimals keep two of them.
    decimals = _SIGNIFICANT_UNDER_A_CENT - 1 - abs(usd).adjusted()
    text = f"{abs(usd).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP):f}"
    # A trailing zero adds no information (0.00999 rounds to 0.010): keep at least the cents.
    whole, _, fraction = text.partition(".")
    return _signed(f"{whole}.{fraction.rstrip('0').ljust(2, '0')}", usd)


def _signed(text: str, usd: Decimal) -> str:
    return f"-${text}" if usd < 0 else f"${text}"
