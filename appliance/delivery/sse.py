"""Server-sent events: the in-process fan-out of job events and the stream every SSE endpoint serves.

Events are stored first (``store.events``), so a client that reconnects with ``Last-Event-ID`` is replayed what
it missed, then follows live ones. A subscriber that falls behind by more than ``MAX_QUEUE`` events is dropped
(its stream ends; the client reconnects and resumes from its last id) so one slow reader cannot grow the
server's memory.
"""
from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Callable

MAX_QUEUE = 1000
DROPPED = {"type": "_dropped"}
CLOSED = {"type": "_closed"}  # the server is stopping: the stream ends cleanly, the client resumes elsewhere


class Hub:
    def __init__(self) -> None:
        self._subscribers: dict[str, set[asyncio.Queue]] = defaultdict(set)
        self.closed = False

    def subscribe(self, job_id: str) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(MAX_QUEUE + 1)
        self._subscribers[job_id].add(queue)
        return queue

    def unsubscribe(self, job_id: str, queue: asyncio.Queue) -> None:
        self._subscribers[job_id].discard(queue)
        if not self._subscribers[job_id]:
            del self._subscribers[job_id]

    def close(self) -> None:
        """End every open stream (a graceful stop): each gets CLOSED and returns, so the server's shutdown
        waits for no stream and cuts none (clients reconnect with Last-Event-ID)."""
        self.closed = True
        for queues in list(self._subscribers.values()):
            for queue in list(queues):
                queue.put_nowait(CLOSED)

    def publish(self, job_id: str, event: dict) -> None:
        for queue in list(self._subscribers.get(job_id, ())):
            if queue.qsize() >= MAX_QUEUE:
                queue.put_nowait(DROPPED)
                self.unsubscribe(job_id, queue)
            else:
                queue.put_nowait(event)


# (stored event) -> (SSE frame bytes, is this the job's final event)
Framer = Callable[[dict], tuple[bytes, bool]]


def parse_last_event_id(value: str | None) -> int:
    """A client's Last-Event-ID: our ids are positive integers; anything else means "from the start"."""
    text = (value or "").strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else 0


async def stream(hub: Hub, job_id: str, replay: Callable[[int], list[dict]], ended: Callable[[], bool],
                 framer: Framer, after: int, keepalive_s: float) -> AsyncIterator[bytes]:
    """Replay stored events after ``after``, then follow live ones until the job's final event."""
    queue = hub.subscribe(job_id)  # before the replay: nothing published in between is missed
    try:
        yield b"retry: 3000\n\n"
        for event in replay(after):
            frame, final = framer(event)
            after = event["id"]
            yield frame
            if final:
                return
        if ended() or hub.closed:
            return
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), timeout=keepalive_s)
            except TimeoutError:
                yield b": keepalive\n\n"
                continue
            if event is DROPPED or event is CLOSED:
                return
            if event["id"] <= after:
                continue
            frame, final = framer(event)
            after = event["id"]
            yield frame
            if final:
                return
    finally:
        hub.unsubscribe(job_id, queue)
