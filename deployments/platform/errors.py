"""The platform's one error type."""

from __future__ import annotations

from tagifai.errors import TagifaiError


class PlatformError(TagifaiError):
    """A platform service could not be started, reached or stopped."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message if not log_tail else f"{message}\n{log_tail}")
        self.summary = message
        self.log_tail = log_tail
