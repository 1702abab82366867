"""Sliding-window rate limit per key, in the server process (the only process that serves requests)."""
from __future__ import annotations

import time
from collections import defaultdict, deque


class SlidingWindow:
    def __init__(self, limit: int, window_s: float) -> None:
        self.limit, self.window_s = limit, window_s
        self._hits: dict[str, deque] = defaultdict(deque)

    def hit(self, key: str, now: float | None = None) -> int:
        """Record a request; returns 0 when allowed, else the seconds to wait (Retry-After)."""
        now = time.monotonic() if now is None else now
        hits = self._hits[key]
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        if len(hits) >= self.limit:
            return max(1, int(hits[0] + self.window_s - now + 0.999))
        hits.append(now)
        return 0
