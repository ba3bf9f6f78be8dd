"""A readers-writer lock for threads: searches share the index, the single writer takes it alone.

hnswlib and faiss release the GIL, so searches run in parallel threads; mutations (adds, deletes,
resizes) must not overlap them. Phase-fair: a waiting writer goes before readers that arrive after it (so a
stream of searches cannot starve writes), and when a writer lets go, the readers that were waiting go
before the next write (so a stream of write slices cannot starve searches either; the commit loop applies a
large batch in slices for that reason).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator


class ReadWriteLock:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._readers_waiting = 0
        self._readers_turn = False  # set when a writer leaves with readers waiting; they enter first

    def _reader_may_enter(self) -> bool:
        return not self._writer and (not self._writers_waiting or self._readers_turn)

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            self._readers_waiting += 1
            while not self._reader_may_enter():
                self._cond.wait()
            self._enter_read()
        try:
            yield
        finally:
            self.release_read()

    def _enter_read(self) -> None:
        self._readers_waiting -= 1
        self._readers += 1
        if self._readers_waiting == 0:
            self._readers_turn = False  # every reader that waited is in: writers go next

    def try_acquire_read(self) -> bool:
        """Take a read share only if that needs no waiting; pair with `release_read`."""
        with self._cond:
            if not self._reader_may_enter():
                return False
            self._readers_waiting += 1
            self._enter_read()
            return True

    def release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers or self._readers_turn:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._readers_turn = self._readers_waiting > 0
                self._cond.notify_all()
