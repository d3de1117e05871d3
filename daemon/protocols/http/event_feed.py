"""Every event on the bus, for the clients of ``GET /v1/events`` (server-sent events).

The bus calls from the pipeline's threads; each client reads from its own queue on the server's event loop. A
client is a subscriber only while its response is open: the stream's end (a hang-up, the server stopping)
unsubscribes it. A client that falls :data:`BACKLOG` events behind is cut off rather than kept growing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

from daemon.core.outbox import json_bytes

BACKLOG = 1000
KEEPALIVE_S = 15.0  # a comment line this often: proxies keep the stream open, a vanished client is noticed
_END = None  # in a subscriber's queue: the stream ends


class Subscription:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(BACKLOG)

    def put(self, frame: bytes | None) -> None:
        """On the subscriber's loop; a full queue ends the stream."""
        if self.queue.full():
            while not self.queue.empty():
                self.queue.get_nowait()
            frame = _END
        self.queue.put_nowait(frame)


class EventFeed:
    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._subscriptions)

    def publish(self, payload: dict[str, Any]) -> None:
        """From any thread: ``payload`` as one ``data:`` frame to every subscriber."""
        self._send(b"data: " + json_bytes(payload) + b"\n\n")  # serialised as MQTT's events topic serialises it

    def close(self) -> None:
        """End every stream (the server is stopping)."""
        self._send(_END)

    def _send(self, frame: bytes | None) -> None:
        with self._lock:
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            try:
                subscription.loop.call_soon_threadsafe(subscription.put, frame)
            except RuntimeError:  # its loop is closed: the server stopped
                pass

    async def frames(self) -> AsyncIterator[bytes]:
        """The stream of one client: subscribed from the first frame on, unsubscribed when it ends."""
        subscription = Subscription(asyncio.get_running_loop())
        with self._lock:
            self._subscriptions.add(subscription)
        try:
            yield b": gsv-edge events\n\n"
            while True:
                try:
                    frame = await asyncio.wait_for(subscription.queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    frame = b": keepalive\n\n"
                if frame is _END:
                    return
                yield frame
        finally:
            with self._lock:
                self._subscriptions.discard(subscription)
