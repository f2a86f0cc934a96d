"""Stream a blocking chunk generator to async code: `aiter_thread(produce)`.

Stdlib only (asyncio, threading); must not import store, xrpc or app. Used by CAR export and sync reads.
Tricky bits: the generator runs on a worker thread of its own bounded pool (STREAM_WORKERS:
a stalled download never takes a thread that password hashing or writes need), behind a
bounded queue (memory stays flat);
when the consumer stops early the worker notices within `poll` seconds, stops pulling from the
generator (so it can close its read snapshot) and the consumer waits briefly for it to finish.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, AsyncIterator, Callable, Iterator

STREAM_WORKERS = 4  # exports at once; more wait their turn (a stalled client is dropped after a deadline)
_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = concurrent.futures.ThreadPoolExecutor(STREAM_WORKERS, thread_name_prefix="tinypds-stream")
    return _pool


async def aiter_thread(
    produce: Callable[[], Iterator[bytes]], queue_size: int = 8, poll: float = 0.2
) -> AsyncIterator[bytes]:
    """Run `produce()` on a worker thread; yield its chunks here. Its exceptions are re-raised here."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue(queue_size)
    stop = threading.Event()
    done = object()

    def put(item: Any) -> bool:
        """Hand one item over; False once the consumer has gone away."""
        fut = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
        while True:
            try:
                fut.result(timeout=poll)
                return True
            except TimeoutError:
                if stop.is_set():
                    fut.cancel()
                    return False

    def run() -> None:
        try:
            for chunk in produce():
                if stop.is_set() or not put(chunk):
                    return
            put(done)
        except BaseException as exc:  # handed to the consumer
            put(exc)

    worker = loop.run_in_executor(_executor(), run)
    try:
        while True:
            item = await queue.get()
            if item is done:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while not queue.empty():
            queue.get_nowait()
        await asyncio.wait([worker], timeout=5)
        if worker.done():
            worker.result()
