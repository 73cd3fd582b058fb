"""A loop an API process runs in its background (see ``hub.sync.scheduler.start_background``)."""

from __future__ import annotations

import asyncio
from typing import Any


class BackgroundLoop:
    """Runs :meth:`_loop` as a task from :meth:`start` until :meth:`stop`
    cancels it and waits for it to end. Subclasses name it (``task_name``)
    and write the loop, which must catch its own errors to go on."""

    task_name = "background-loop"
    _task: asyncio.Task[None] | None = None

    async def start(self) -> Any:
        self._task = asyncio.create_task(self._loop(), name=self.task_name)
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        raise NotImplementedError
