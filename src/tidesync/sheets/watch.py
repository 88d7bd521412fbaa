"""Waiting for a file to change, and to settle.

A :class:`FileWatch` wakes its reader when the file may have changed:
file-system notifications through watchfiles (inotify on Linux) when it can
watch the file's directory, and in every case a stat check every
``poll_interval`` (network file systems and containers often deliver no
notifications). The directory is watched, not the file, because editors save
by writing a temporary file and renaming it over the original: the watched
inode is then gone, and the new file is a new inode under the old name.

A file's :data:`Signature` is its (inode, size, mtime in ns): a rename-and-
replace changes the inode even when size and mtime happen to match.
:meth:`FileWatch.settled` waits until the signature has held for ``settle``
seconds, so a file being written is not read mid-write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from tidesync.clock import Clock

log = logging.getLogger("tidesync.sheets.watch")

Signature = tuple[int, int, int]


def signature(path: Path) -> Signature | None:
    """(inode, size, mtime_ns), or None while the file does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class FileWatch:
    def __init__(self, path: Path, *, poll_interval: float, settle: float, notify: bool, clock: Clock) -> None:
        self.path = path
        self.poll_interval = poll_interval
        self.settle = settle
        self.notify = notify
        self.clock = clock
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.notifying = False  # True while file-system notifications arrive

    def start(self) -> None:
        if self.notify and self._task is None:
            self._stop = asyncio.Event()
            self._task = asyncio.create_task(self._notifications(), name=f"watch {self.path.name}")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            self._stop.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.notifying = False

    async def _notifications(self) -> None:
        try:
            from watchfiles import awatch
        except ImportError:  # polling alone
            return
        name = self.path.name
        directory = self.path.parent
        try:
            async for _ in awatch(
                directory,
                watch_filter=lambda _change, p: os.path.basename(p) == name,
                stop_event=self._stop,
                debounce=200,
                step=10,
                recursive=False,
                yield_on_timeout=False,
            ):
                self.notifying = True
                self._wake.set()
        except (OSError, RuntimeError) as exc:  # no such directory, too many watches: polling alone
            log.info("%s: no file-system notifications (%s); polling every %gs", self.path, exc, self.poll_interval)
        finally:
            self.notifying = False

    async def wait(self, timeout: float) -> None:
        """Return when a notification came, or after ``min(timeout, poll_interval)`` seconds."""
        delay = max(0.0, min(timeout, self.poll_interval))
        if self._wake.is_set():
            self._wake.clear()
            return
        if self._task is None:
            await self.clock.sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)
        self._wake.clear()

    async def settled(self, seen: Signature | None) -> Signature | None:
        """Wait until the file's signature holds for ``settle`` seconds; return it (None: no file).

        ``seen`` is the signature just observed. A file whose mtime is already
        ``settle`` old needs no wait; any other must hold still through one.
        """
        sig = seen
        while sig is not None:
            if self.clock.time() - sig[2] / 1e9 >= self.settle:
                again = signature(self.path)  # old enough already: only confirm that nothing moved
            else:
                await self.clock.sleep(self.settle)
                again = signature(self.path)
            if again == sig:
                return sig
            sig = again
        return None
