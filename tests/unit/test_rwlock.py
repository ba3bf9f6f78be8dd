"""The partition's readers-writer lock is phase-fair: a waiting writer goes before readers that come after
it, and the readers that waited for a writer go before that writer's next turn."""
from __future__ import annotations

import threading
import time

from shard.rwlock import ReadWriteLock


def test_a_waiting_writer_goes_before_readers_that_arrive_after_it() -> None:
    lock = ReadWriteLock()
    assert lock.try_acquire_read()
    entered = threading.Event()

    def writer() -> None:
        with lock.write():
            entered.set()

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.2)  # the writer is blocked on the lock by now
    assert not lock.try_acquire_read()  # a new reader would starve the writer
    lock.release_read()
    thread.join(5)
    assert entered.is_set()
    assert lock.try_acquire_read()
    lock.release_read()


def test_readers_that_waited_for_a_writer_go_before_its_next_turn() -> None:
    lock = ReadWriteLock()
    order: list[str] = []
    reader_in = threading.Event()
    release_reader = threading.Event()

    def reader() -> None:
        with lock.read():
            order.append("reader")
            reader_in.set()
            release_reader.wait(5)

    with lock.write():
        thread = threading.Thread(target=reader)
        thread.start()
        time.sleep(0.2)  # the reader is blocked on the lock by now (nothing to poll without peeking inside)
        # The writer's next slice is already waiting too when this one ends: the reader must still go first.
        second = threading.Thread(target=lambda: (lock.write().__enter__(), order.append("writer")), daemon=True)
        second.start()
        time.sleep(0.2)
    assert reader_in.wait(5), "the waiting reader was starved by the next write"
    release_reader.set()
    thread.join(5)
    second.join(5)
    assert order == ["reader", "writer"]
