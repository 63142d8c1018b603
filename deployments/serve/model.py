"""The served model: ``models:/tagifai@production``, swapped in place when the alias moves.

A background thread asks the registry for the alias' version every ``reload_seconds`` (one
indexed lookup) and, when it changed, loads the new version and its monitoring context beside
the old one, then swaps one reference: a request holds the :class:`ServedModel` it started
with, so it never sees half of a swap, and no request waits for a load.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from tagifai.config import Settings
from tagifai.predict import ServedModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HolderStatus:
    version: int | None
    loaded_at: float | None
    last_check: float | None
    last_error: str | None


class ModelHolder:
    """Holds the production model and keeps it current (thread-safe reads: one reference)."""

    def __init__(self, settings: Settings, reload_seconds: float | None = None) -> None:
        self.settings = settings
        self.reload_seconds = reload_seconds or settings.predict_reload_seconds
        self.served: ServedModel | None = None
        self.loaded_at: float | None = None
        self.last_check: float | None = None
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """Load the production version if it is not the one served; True if it swapped."""
        from tagifai import registry
        from tagifai.predict import load_served

        self.last_check = time.time()
        try:
            version = registry.production_version(self.settings)
            current = self.served.version if self.served else None
            if version is None or version == current:
                self.last_error = None
                return False
            served = load_served(self.settings, version)
        except Exception as error:  # the registry unreachable: keep serving what we have
            self.last_error = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
            logger.error("could not check or load the production model: %s", self.last_error)
            return False
        self.served, self.loaded_at, self.last_error = served, time.time(), None
        logger.info("serving v%d (was v%s)", served.version, current)
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self.reload_seconds)

    def start(self) -> ModelHolder:
        self._thread = threading.Thread(target=self._loop, name="model-reload", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def status(self) -> HolderStatus:
        version = self.served.version if self.served else None
        return HolderStatus(version, self.loaded_at, self.last_check, self.last_error)
