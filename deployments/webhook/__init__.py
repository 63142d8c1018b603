"""Webhook receiver: a signed "new data arrived" POST becomes the Prefect event that triggers runs.

Routes:
    POST /hooks/data-arrived   202 {"event_id": "..."} after emitting ``tagifai.data.arrived``
    GET  /health               200 {"status": "ok"}
    GET  /data-docs/...        the Great Expectations Data Docs, read-only

Modules: ``config`` (settings, resolved once), ``signing`` (HMAC headers), ``uris`` (which data
URIs pass), ``events`` (the notice and its Prefect event), ``receiver`` (the ASGI app),
``sender`` (``python -m deployments.webhook PROJECTS_URI TAGS_URI``).

Signing (see :func:`sign`): the sender sends ``X-Tagifai-Timestamp: <unix seconds>`` and
``X-Tagifai-Signature: sha256=<hex HMAC-SHA256(secret, f"{timestamp}.{raw body}")>``. The
timestamp is inside the MAC, so a captured request cannot be replayed with a fresh timestamp,
and timestamps more than 5 minutes old or ahead are refused (401).

Body: at most ``TAGIFAI_WEBHOOK_MAX_BYTES`` (64 KiB; 413, read incrementally, never buffered
whole), JSON (400), exactly ``{"projects_uri", "tags_uri", "source"?, "batch_id"?}`` (422).
Each URI must be one of (422 otherwise):

* an absolute path or ``file://`` URI that resolves (``..`` and symlinks followed) inside a data
  root: ``TAGIFAI_WEBHOOK_DATA_ROOT`` (comma list), default ``settings.data_dir``;
* ``sqlite:////abs/path.db#table`` with the database file inside a data root;
* ``postgresql://`` or ``postgresql+psycopg://host/db#table`` whose host is listed in
  ``TAGIFAI_WEBHOOK_ALLOW_SQL_HOSTS``, with no password and no query string (libpq reads
  ``?host=`` as a host override);
* ``s3://bucket/key`` whose bucket is listed in ``TAGIFAI_WEBHOOK_ALLOW_S3_BUCKETS``.

Paths travel on in canonical (resolved) form, so the flow reads exactly what was checked.

Configuration is read from the environment when the app starts: ``TAGIFAI_WEBHOOK_SECRET``
(required, at least 16 characters: without it uvicorn refuses to start), ``PREFECT_API_URL`` and,
with basic auth on the server, ``PREFECT_API_AUTH_STRING``; the data root and the Data Docs
directory default from the project settings built from that same environment.

Prefect Cloud: Cloud has webhooks of its own, so there this receiver is not needed. Create one
whose template yields the same event, and the deployment trigger works unchanged::

    prefect cloud webhook create tagifai-data-arrived --template '{
      "event": "tagifai.data.arrived",
      "resource": {"prefect.resource.id": "tagifai.data.{{ body.batch_id }}"},
      "payload": {
        "projects_uri": {{ body.projects_uri | tojson }},
        "tags_uri": {{ body.tags_uri | tojson }},
        "batch_id": {{ body.batch_id | tojson }},
        "source": {{ body.source | default("prefect-cloud-webhook") | tojson }}
      }
    }'

(``tojson`` keeps a quote inside a URI from breaking the JSON; Cloud senders must send
``batch_id``, which this receiver otherwise derives from the URIs.)
Cloud authenticates the sender with its secret URL (and, on paid tiers, a service account's API
key) instead of this HMAC scheme, and checks no paths, so on Cloud the extract step's own checks
are the only guard on the URIs.
"""

from deployments.webhook.config import WebhookConfig, WebhookConfigError, load_config
from deployments.webhook.events import EVENT_NAME, DataArrived, build_event
from deployments.webhook.receiver import HOOK_PATH, app, create_app
from deployments.webhook.sender import main, send_data_arrived
from deployments.webhook.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, compute_signature, sign
from deployments.webhook.uris import UriRejected, check_uri

__all__ = [
    "EVENT_NAME",
    "HOOK_PATH",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "DataArrived",
    "UriRejected",
    "WebhookConfig",
    "WebhookConfigError",
    "app",
    "build_event",
    "check_uri",
    "compute_signature",
    "create_app",
    "load_config",
    "main",
    "send_data_arrived",
    "sign",
]
