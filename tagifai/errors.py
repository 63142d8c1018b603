"""Domain errors: each carries what a person needs to act on it."""


class TagifaiError(Exception):
    """Base class; the CLI prints ``str(error)`` on one line and exits non-zero."""


class ConfigError(TagifaiError):
    """A ``TAGIFAI_*`` setting has a value that cannot be used."""


class DataSourceError(TagifaiError):
    """A source table is missing, unreadable, empty, badly encoded or lacks columns."""


class DataSourceUnavailable(TagifaiError):
    """A source could not be reached for now (a database down, locked or refusing
    connections): worth retrying, unlike a :class:`DataSourceError`."""


class DataValidationError(TagifaiError):
    """Great Expectations found data that breaks a suite."""


class FeatureStoreError(TagifaiError):
    """Feast wrote or returned something other than what was expected."""


class ModelNotFoundError(TagifaiError):
    """No model (or no production model) exists yet."""


class EmbeddingModelError(TagifaiError):
    """The sentence-embedding model is missing, altered, unreadable or not the one expected."""


class RegistryUnavailableError(TagifaiError):
    """The MLflow store (a team's PostgreSQL) cannot be reached."""
