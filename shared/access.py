"""What an API key may do (scopes) and how often (a rate limit per key), on every service. Pure apart from the clock.

The platform's guard (`shared.http.api_key_guard`) decides whether a key is valid at all; this
decides, per route, whether that key carries the route's scope, and whether it has requests left
(`shared.http.scope_guard` turns the answers into 403 and 429).

Scopes: `tickets:read` (every GET about tickets, clocks, queues and deliveries), `tickets:write`
(changing tickets and customers' preferences), `agents` (agents' profiles, presence, contact
details and offers).

- `API_KEY_SCOPES`: `key-a=tickets:read tickets:write; key-b=tickets:read`. A key not listed has
  every scope, so a deployment that names no scopes behaves as before.
- `RATE_LIMIT_PER_MINUTE`: a token bucket per key (refilling continuously, holding ten seconds'
  worth, at least 10), per replica: with N replicas a key gets up to N times the limit. 0: no limit.

Keys are never logged or kept in memory in the clear beyond the request; buckets are keyed by a
hash of the key.
"""

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

SCOPES = frozenset({"tickets:read", "tickets:write", "agents"})


class Forbidden(Exception):
    pass


class RateLimited(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limit exceeded; retry in {retry_after:.0f} s")
        self.retry_after = retry_after


def parse_scopes(text: str) -> dict[str, frozenset[str]]:
    """`key=scope scope; key2=scope` → {key: scopes}; an unknown scope or a malformed entry is refused."""
    granted: dict[str, frozenset[str]] = {}
    for number, entry in enumerate((part.strip() for part in text.split(";")), start=1):
        if not entry:
            continue
        key, sep, scopes = entry.partition("=")
        names = frozenset(scopes.replace(",", " ").split())
        if not sep or not key.strip() or not names:
            raise ValueError(f"API_KEY_SCOPES entry {number} is not 'key=scope scope'")
        if unknown := sorted(names - SCOPES):
            raise ValueError(f"API_KEY_SCOPES entry {number}: unknown scopes {', '.join(unknown)}; known: {', '.join(sorted(SCOPES))}")
        granted[key.strip()] = names
    return granted


@dataclass
class _Bucket:
    tokens: float
    at: float


class KeyPolicy:
    def __init__(
        self, scopes: dict[str, frozenset[str]], per_minute: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._scopes = {_fingerprint(key): names for key, names in scopes.items()}
        self._rate = per_minute / 60
        self._capacity = max(10.0, self._rate * 10)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def check(self, key: str, scope: str) -> None:
        """Every request counts against the key's bucket, allowed or not; then the scope is checked."""
        fingerprint = _fingerprint(key)
        self._take(fingerprint)
        granted = self._scopes.get(fingerprint)
        if granted is not None and scope not in granted:
            raise Forbidden(f"this API key lacks the scope {scope}")

    def _take(self, fingerprint: str) -> None:
        if self._rate <= 0:
            return
        now = self._clock()
        bucket = self._buckets.get(fingerprint) or _Bucket(self._capacity, now)
        bucket.tokens = min(self._capacity, bucket.tokens + (now - bucket.at) * self._rate)
        bucket.at = now
        self._buckets[fingerprint] = bucket
        if bucket.tokens < 1:
            raise RateLimited((1 - bucket.tokens) / self._rate)
        bucket.tokens -= 1


def _fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]
