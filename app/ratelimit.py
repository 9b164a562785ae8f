"""Token buckets, one per client (a key, or an address when the service has no keys), held in bounded memory."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from clipspace.settings import RateLimit

# Anonymous clients are counted per address, which anyone can vary: past this many, the longest idle bucket goes
# (it would have refilled anyway if idle for burst / rate seconds). Keys are few and known, so they never go.
MAX_BUCKETS = 10_000


class TokenBuckets:
    """`take(client)` answers 0 when the client may go on, else the seconds until its next token.

    Runs on the event loop only (no lock): a bucket is refilled lazily, from the time since it was last seen.
    """

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, when)

    def take(self, client: str) -> float:
        now = self._clock()
        tokens, then = self._buckets.pop(client, (float(self.limit.burst), now))
        tokens = min(float(self.limit.burst), tokens + (now - then) * self.limit.per_second)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.limit.per_second
        self._buckets[client] = (tokens, now)  # to the end: the most recently seen
        if len(self._buckets) > MAX_BUCKETS:
            self._buckets.popitem(last=False)
        return wait
