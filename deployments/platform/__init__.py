"""One-command local platform: Prefect server, process worker, webhook receiver, data-arrival
sensor, MLflow UI and the prediction service, and in team mode PostgreSQL and Redis under them
(docs/team-mode.md).

    python -m deployments.platform up [SERVICE ...]   # start what isn't running, print the URLs
    python -m deployments.platform up --team          # switch stores/ to team mode, start it
    python -m deployments.platform status [--json]
    python -m deployments.platform url                # the Prefect API URL (starts the server)
    python -m deployments.platform down

Why a real server: without ``PREFECT_API_URL`` every Prefect process starts its own ephemeral
server (15-20 s each) and process-based Dask clusters cannot reach it, so every process of the
project talks to one ``prefect server start`` on SQLite under ``stores/prefect``.

Modules: ``spec`` (what a service is), ``services`` (one module per service and the registry),
``supervisor`` (up/down/status), ``processes`` (spawn, verify, stop), ``records`` (files under
``stores/platform`` and the lock), ``ports``, ``auth``, ``team`` (team mode's switch, secrets,
system users and binaries), ``cli``.

Each service runs detached in its own session (process group), so it outlives the command that
started it; its log, and a JSON record of its PID, start time, command line and URL, live in
``stores/platform/``. ``down`` stops only processes whose record it wrote and whose start time and
command line still match, so a recycled PID is never signalled. A file lock makes concurrent
callers (two test sessions, two terminals) share one server instead of racing to start two.

Environment:
    PREFECT_API_URL                   use this Prefect API; no local server is started
    TAGIFAI_PREFECT_PORT              4200; TAGIFAI_WEBHOOK_PORT 8787; TAGIFAI_MLFLOW_PORT 5000;
                                      TAGIFAI_PREDICT_PORT 8000. A port taken by something else
                                      is replaced by a free one.
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY the worker's flow runs send a heartbeat every 30 s (the
                                      zombie automation crashes runs whose heartbeats stop)
    PREFECT_WORKER_QUERY_SECONDS      worker poll interval, 2 s here (Prefect's default is 10 s)
    PREFECT_SERVER_API_AUTH_STRING    ``user:password`` basic auth on the server; the worker and
                                      the webhook receiver get it as PREFECT_API_AUTH_STRING
    TAGIFAI_WEBHOOK_SECRET            HMAC secret of the receiver; if unset one is generated once
                                      into ``stores/platform/webhook-secret`` (mode 0600)
    TAGIFAI_PLATFORM_TIMEOUT_SCALE    multiply the start-up timeouts (slow CI machines)
    TAGIFAI_POSTGRES_PORT             team mode's first ports (5432, 6379 when free), fixed in
    TAGIFAI_REDIS_PORT                stores/team/team.env by ``up --team``
    TAGIFAI_POSTGRES_BINDIR           initdb/postgres (default: Debian's newest
                                      /usr/lib/postgresql/<version>/bin); TAGIFAI_REDIS_SERVER

Nothing here imports Prefect: the services are separate processes, so the CLI starts in a
fraction of a second and ``status``/``down`` work even when Prefect itself is broken.
"""

from deployments.platform.auth import (
    basic_auth_headers,
    prefect_auth_headers,
    stored_webhook_secret,
    webhook_secret,
)
from deployments.platform.errors import PlatformError
from deployments.platform.ports import HOST, free_ports
from deployments.platform.processes import tree_rss
from deployments.platform.records import ServiceRecord, platform_dir, read_record
from deployments.platform.services import REGISTRY, SERVICES
from deployments.platform.services.worker import WORK_POOL
from deployments.platform.spec import Launch, LaunchContext, ServiceSpec
from deployments.platform.supervisor import ServiceStatus, down, ensure_server, status, up

__all__ = [
    "HOST",
    "REGISTRY",
    "SERVICES",
    "WORK_POOL",
    "Launch",
    "LaunchContext",
    "PlatformError",
    "ServiceRecord",
    "ServiceSpec",
    "ServiceStatus",
    "basic_auth_headers",
    "down",
    "ensure_server",
    "free_ports",
    "platform_dir",
    "prefect_auth_headers",
    "read_record",
    "status",
    "stored_webhook_secret",
    "tree_rss",
    "up",
    "webhook_secret",
]
