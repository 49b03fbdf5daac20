"""Throttling of failed key attempts, per client address: guessing the master key (API or UI sign-in) is slow.

After `max_failures` wrong keys from one address within `window_s`, that address is refused with 429 and
`retry-after` for `window_s`; each further block that follows soon after doubles, up to `max_block_s`. An address
that stays quiet for `max_block_s` after its last block starts again from the shortest one.

Invariants:
- While an address is refused, nothing from it reaches the key check, the right key included: a throttle that let
  the right key through would answer every guess (401 or 429) and be no throttle at all. Other addresses are never
  refused, so the real admin is not locked out by someone else's guessing.
- The check on every request is a dict lookup (none at all while the table is empty): no lock, no I/O, no clock read
  for an address without failures. Only a failure writes.
- The table is bounded (`capacity` addresses); the address touched longest ago is forgotten first.
- IPv6 addresses count per /64 (what one host or one customer of a provider usually holds), IPv4 per address.
- Per process: with several workers or instances, an attacker gets at most `max_failures` guesses per window from
  each of them (bounded, where it was unlimited). Refusals cost no I/O on any path, which a shared table would.

The client address is the socket peer (`scope["client"]`); `X-Forwarded-For` counts only when the peer is one of
the configured trusted proxies (`general_settings.auth_trusted_proxies`): then the right-most address in it that is
not itself a trusted proxy, the first one a trusted hop saw. Anything a client writes left of that is ignored.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

from haimaker.clock import Clock
from haimaker.errors import RateLimitError

# ~200 bytes an entry: some 13 MB when full. An attacker with more addresses than this gets nothing from filling
# it but the forgetting of its own oldest entries, which a botnet that large does not need.
DEFAULT_CAPACITY: Final = 65_536


@dataclass(slots=True)
class _Record:
    failures: int = 0
    window_ends_at: float = 0.0
    blocked_until: float = 0.0
    strikes: int = 0


class AuthThrottle:
    """Counts failed key attempts per client address and refuses an address that made too many."""

    def __init__(
        self,
        clock: Clock,
        *,
        # No defaults here: the config (`general_settings.auth_failure_*`) is the one place they are set.
        max_failures: int,
        window_s: float,
        max_block_s: float,
        capacity: int = DEFAULT_CAPACITY,
        trusted_proxies: Collection[str] = (),
    ) -> None:
        self._clock = clock
        self._trusted_proxies = frozenset(trusted_proxies)
        self._max_failures = max_failures
        self._window_s = window_s
        self._max_block_s = max(max_block_s, window_s)
        self._capacity = capacity
        self._table: OrderedDict[str, _Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def address_of(self, scope: Mapping[str, Any]) -> str:
        """The address an ASGI request's failed keys count under (`client_address` with our trusted proxies)."""
        return client_address(scope, self._trusted_proxies)

    def refusal_of(self, scope: Mapping[str, Any]) -> RateLimitError | None:
        """`refusal(address_of(scope))`, with nothing computed while the table is empty (the hot path's check)."""
        if not self._table:
            return None
        return self.refusal(client_address(scope, self._trusted_proxies))

    def refusal(self, address: str) -> RateLimitError | None:
        """The 429 to answer `address` with while it is throttled, else None (check this before the key)."""
        if not self._table:
            return None
        record = self._table.get(_key(address))
        if record is None or not record.blocked_until:
            return None
        remaining_s = record.blocked_until - self._clock.monotonic()
        if remaining_s <= 0:
            return None
        retry_after = max(1, math.ceil(remaining_s))
        return RateLimitError(
            f"Too many failed authentication attempts from this address. Retry after {retry_after} seconds.",
            headers={"retry-after": str(retry_after)},
        )

    def record_failure(self, address: str) -> None:
        """Count a wrong key presented by `address`; block it once it made `max_failures` within the window."""
        if self._max_failures <= 0:
            return
        key = _key(address)
        now = self._clock.monotonic()
        record = self._table.get(key)
        if record is None:
            record = self._table[key] = _Record()
            if len(self._table) > self._capacity:
                self._table.popitem(last=False)
        else:
            self._table.move_to_end(key)
        if record.blocked_until > now:
            return  # callers refuse before checking a key; a block is never extended by what it refused
        if now >= record.window_ends_at:
            record.failures = 0
            record.window_ends_at = now + self._window_s
        record.failures += 1
        if record.failures < self._max_failures:
            return
        if record.blocked_until and now - record.blocked_until > self._max_block_s:
            record.strikes = 0
        record.strikes += 1
        block_s = min(self._window_s * 2 ** min(record.strikes - 1, 32), self._max_block_s)
        record.blocked_until = now + block_s
        record.failures = 0
        record.window_ends_at = 0.0


def _key(address: str) -> str:
    if ":" not in address:
        return address
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return ip.exploded[:19]  # the /64: four groups of four hex digits and their colons
    return address


def client_address(scope: Mapping[str, Any], trusted_proxies: Collection[str]) -> str:
    """The address a request's failed keys are counted under (see the module docstring); "" when unknown."""
    client = scope.get("client")
    peer: str = client[0] if client else ""
    if not trusted_proxies or peer not in trusted_proxies:
        return peer
    hops: list[str] = []
    for name, value in scope["headers"]:
        if name == b"x-forwarded-for":
            hops.extend(part.strip() for part in value.decode("latin-1").split(","))
    for hop in reversed(hops):
        if hop and hop not in trusted_proxies:
            return hop
    return peer
