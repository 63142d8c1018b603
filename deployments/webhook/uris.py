"""Which data URIs the receiver passes on, in canonical form (``check_uri``).

Each URI must be one of (:class:`UriRejected` otherwise):

* an absolute path or ``file://`` URI that resolves (``..`` and symlinks followed) inside a data
  root;
* ``sqlite:////abs/path.db#table`` with the database file inside a data root;
* ``postgresql://`` or ``postgresql+psycopg://host/db#table`` whose host is allowed, with no
  password and no query string (libpq reads ``?host=`` as a host override);
* ``s3://bucket/key`` whose bucket is allowed.

Paths travel on in canonical (resolved) form, so the flow reads exactly what was checked.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from deployments.webhook.config import WebhookConfig

SQLITE_SCHEMES = frozenset({"sqlite", "sqlite+pysqlite"})
POSTGRES_SCHEMES = frozenset({"postgresql", "postgresql+psycopg"})
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class UriRejected(ValueError):
    """A URI that the receiver will not pass on; the message says why, without echoing it."""


def has_scheme(uri: str) -> bool:
    """True for ``scheme:...`` URIs, False for plain paths."""
    return _SCHEME.match(uri) is not None


def _inside_roots(path_text: str, roots: tuple[Path, ...]) -> Path:
    if "\x00" in path_text:
        raise UriRejected("path contains a NUL byte")
    path = Path(path_text)
    if not path.is_absolute():
        raise UriRejected("path must be absolute")
    try:
        resolved = path.resolve()  # follows every symlink and collapses '..'
    except (OSError, RuntimeError) as error:  # e.g. a symlink loop
        raise UriRejected("path cannot be resolved") from error
    if not any(resolved.is_relative_to(root) for root in roots):
        raise UriRejected("path is outside the allowed data root")
    return resolved


def _split_table(uri: str) -> tuple[str, str]:
    # Exactly one '#': the extract step splits on the first one, so a second could make it read
    # a different database or table than the one checked here.
    url, _, table = uri.partition("#")
    if uri.count("#") != 1 or not _TABLE.match(table):
        raise UriRejected("SQL URIs need a '#<table>' suffix naming one table")
    return url, table


def check_uri(uri: str, config: WebhookConfig) -> str:
    """Return the canonical form of an allowed data URI.

    Raises:
        UriRejected: the scheme, host, bucket or path is not allowed.
    """
    match = _SCHEME.match(uri)
    scheme = match.group(1).lower() if match else ""
    if not scheme:
        return str(_inside_roots(uri, config.data_roots))
    if scheme == "file":
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            raise UriRejected("file URIs must be file:///absolute/path")
        return str(_inside_roots(unquote(parts.path), config.data_roots))
    if scheme in SQLITE_SCHEMES:
        url, table = _split_table(uri)
        prefix = url[: len(scheme)] + ":///"
        if not url.startswith(prefix):
            raise UriRejected("SQLite URIs must be sqlite:////absolute/path.db#table")
        database = url[len(prefix) :]
        if "?" in database or "%" in database:
            raise UriRejected("SQLite URIs may not carry a query string or %-escapes")
        resolved = _inside_roots(database, config.data_roots)
        if "%" in str(resolved):
            raise UriRejected("SQLite database path may not contain '%'")
        return f"{scheme}:///{resolved}#{table}"
    if scheme in POSTGRES_SCHEMES:
        url, table = _split_table(uri)
        parts = urlsplit(url)
        if parts.password is not None:
            raise UriRejected("credentials are not accepted in URIs; use the worker's PGPASSFILE")
        if parts.query:
            raise UriRejected("PostgreSQL URIs may not carry a query string")
        if (parts.hostname or "").lower() not in config.allowed_sql_hosts:
            raise UriRejected("SQL host is not in TAGIFAI_WEBHOOK_ALLOW_SQL_HOSTS")
        return uri
    if scheme == "s3":
        parts = urlsplit(uri)
        if parts.netloc not in config.allowed_s3_buckets or not parts.path.strip("/"):
            raise UriRejected("S3 bucket is not in TAGIFAI_WEBHOOK_ALLOW_S3_BUCKETS")
        if parts.query or parts.fragment:
            raise UriRejected("S3 URIs may not carry a query string or fragment")
        return uri
    raise UriRejected(f"scheme '{scheme[:20]}' is not allowed")
