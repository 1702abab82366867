"""The SSE hub drops a subscriber that falls too far behind (it reconnects with Last-Event-ID), so one slow
reader cannot grow the server's memory."""
import asyncio

from appliance.delivery import sse


def test_a_slow_subscriber_is_dropped_and_a_fast_one_is_not():
    async def scenario() -> tuple[list, list]:
        hub = sse.Hub()
        slow, fast = hub.subscribe("job"), hub.subscribe("job")
        received = []
        for n in range(sse.MAX_QUEUE + 50):
            hub.publish("job", {"id": n + 1})
            received.append(fast.get_nowait())
        drained = []
        while not slow.empty():
            drained.append(slow.get_nowait())
        return received, drained

    received, drained = asyncio.run(scenario())
    assert [e["id"] for e in received] == list(range(1, sse.MAX_QUEUE + 51))  # the fast one got everything
    assert len(drained) == sse.MAX_QUEUE + 1 and drained[-1] is sse.DROPPED  # the slow one: a bounded queue, then out


def test_last_event_id_parsing():
    assert [sse.parse_last_event_id(v) for v in ("42", " 7 ", "abc", "1e3", "-5", "9" * 40, "²", None)] == \
        [42, 7, 0, 0, 0, 0, 0, 0]
