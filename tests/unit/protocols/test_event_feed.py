"""The event stream's fan-out: frames to every open stream, none kept for a stream that ended or fell behind."""

from __future__ import annotations

import asyncio
import json

from daemon.protocols.http import event_feed
from daemon.protocols.http.event_feed import EventFeed


def test_frames_reach_each_subscriber_until_it_leaves() -> None:
    async def scenario() -> tuple[list[bytes], int]:
        feed = EventFeed()
        frames = feed.frames()
        greeting = await anext(frames)
        assert greeting.startswith(b":") and len(feed) == 1
        feed.publish({"id": "a", "event": "queued"})
        got = [await anext(frames)]
        await frames.aclose()  # the client hung up
        return got, len(feed)

    got, left = asyncio.run(scenario())
    assert got == [b'data: {"id": "a", "event": "queued"}\n\n'] and left == 0
    assert json.loads(got[0][6:]) == {"id": "a", "event": "queued"}


def test_a_subscriber_that_falls_behind_is_ended(monkeypatch) -> None:
    monkeypatch.setattr(event_feed, "BACKLOG", 2)

    async def scenario() -> tuple[list[bytes], int]:
        feed = EventFeed()
        frames = feed.frames()
        await anext(frames)
        for n in range(3):
            feed.publish({"n": n})
        await asyncio.sleep(0)  # the frames arrive through the loop
        rest = [frame async for frame in frames]
        return rest, len(feed)

    rest, left = asyncio.run(scenario())
    assert rest == [] and left == 0


def test_closing_the_feed_ends_every_stream() -> None:
    async def scenario() -> int:
        feed = EventFeed()
        streams = [feed.frames(), feed.frames()]
        for stream in streams:
            await anext(stream)
        feed.close()
        for stream in streams:
            assert [frame async for frame in stream] == []
        return len(feed)

    assert asyncio.run(scenario()) == 0
