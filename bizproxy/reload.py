"""Hot reload: watch routes.yaml and the files it references, and swap in each good version.

The reloader only notices and asks; loading is `load_config` (the same path as `check`
and start-up), building is `compile_table`, swapping is `Gateway.swap`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import watchfiles

from bizproxy.config import LoadedConfig, load_config
from bizproxy.diff import summarize
from bizproxy.errors import ConfigError
from bizproxy.gateway import Gateway
from bizproxy.metrics import RELOADS
from bizproxy.policies.throttle_store import ThrottleStore
from bizproxy.table import compile_table
from bizproxy.units import plural

logger = logging.getLogger("bizproxy.reload")

DEBOUNCE_MILLISECONDS = 200
"""Events closer together than this are one change: one save, one reload."""


class Reloader:
    """Loads the config again on request and swaps the gateway's table when it is good."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        loaded: LoadedConfig,
        store: ThrottleStore,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.loaded = loaded
        self.store = store
        self.environ = environ
        self.gateway: Gateway | None = None
        self._lock = asyncio.Lock()

    @property
    def watched_files(self) -> tuple[Path, ...]:
        """The config as named (its symlinks unresolved) and every file it references."""
        return (self.path.absolute(), *self.loaded.files)

    async def reload_now(self, reason: str = "request") -> dict[str, Any]:
        """Load, validate, compile and swap; on any problem keep the serving table."""
        if self.gateway is None:
            raise RuntimeError("the reloader has no gateway to swap tables into")
        async with self._lock:
            return await self._reload(self.gateway, reason)

    async def _reload(self, gateway: Gateway, reason: str) -> dict[str, Any]:
        try:
            loaded = await asyncio.to_thread(load_config, self.path, environ=self.environ)
        except ConfigError as error:
            return self._rejected(gateway, [str(problem) for problem in error.problems])
        except OSError as error:
            return self._rejected(gateway, [f"{self.path}: cannot read the config: {error}"])

        if loaded.content_hash == self.loaded.content_hash:
            gateway.record_reload(ok=True, errors=[])
            logger.debug("config %s unchanged (%s); nothing to reload", self.path, reason)
            return {"ok": True, "changed": False, "version": loaded.content_hash}

        # Built off the event loop too: 1,000 routes take tens of milliseconds to compile,
        # which requests in flight should not wait for.
        table = await asyncio.to_thread(
            compile_table, loaded, store=self.store, previous=gateway.table
        )
        summary = summarize(self.loaded.model, loaded.model)
        await gateway.swap(table)
        self.loaded = loaded
        RELOADS.labels(result="ok").inc()
        gateway.record_reload(ok=True, errors=[])
        logger.info("reloaded %s (%s): %s", self.path.name, reason, summary)
        return {"ok": True, "changed": True, "version": loaded.content_hash, "summary": summary}

    def _rejected(self, gateway: Gateway, errors: list[str]) -> dict[str, Any]:
        RELOADS.labels(result="rejected").inc()
        gateway.record_reload(ok=False, errors=errors)
        logger.warning(
            "rejected the edit of %s; the last good table keeps serving (%s)",
            self.path.name,
            plural(len(errors), "problem"),
        )
        for error in errors:
            logger.warning("%s", error)
        return {"ok": False, "errors": errors}

    def _is_relevant(self, changed: str) -> bool:
        name = os.path.basename(changed)
        # Kubernetes swaps a `..data` symlink to a new `..<timestamp>` folder.
        return name.startswith("..") or name in {p.name for p in self.watched_files}

    async def watch(self, stop: asyncio.Event, *, force_polling: bool = False) -> None:
        """Reload on every relevant change until `stop` is set.

        Folders are watched rather than files, so that saves which replace the file
        (rename over it, delete and recreate, a swapped symlink) are seen too.
        """
        while not stop.is_set():
            folders = sorted({str(p.parent) for p in self.watched_files})
            async for changes in watchfiles.awatch(
                *folders,
                stop_event=stop,
                debounce=DEBOUNCE_MILLISECONDS,
                step=50,
                force_polling=force_polling,
                poll_delay_ms=200,
                recursive=False,
                ignore_permission_denied=True,
            ):
                relevant = [path for _, path in changes if self._is_relevant(path)]
                if not relevant:
                    continue
                logger.debug("config files changed: %s", ", ".join(sorted(set(relevant))))
                before = set(folders)
                await self.reload_now("file change")
                if {str(p.parent) for p in self.watched_files} != before:
                    break  # the set of referenced folders changed: watch the new set
