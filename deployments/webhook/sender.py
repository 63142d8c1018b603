"""The sender: ``python -m deployments.webhook PROJECTS_URI TAGS_URI`` posts a signed notice."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

import httpx

from deployments.platform import HOST, read_record, stored_webhook_secret
from deployments.platform.services.webhook import SPEC as RECEIVER
from deployments.webhook.receiver import HOOK_PATH
from deployments.webhook.signing import sign
from deployments.webhook.uris import has_scheme
from tagifai.config import get_settings


def send_data_arrived(
    url: str,
    secret: str,
    projects_uri: str,
    tags_uri: str,
    source: str | None = None,
    batch_id: str | None = None,
) -> httpx.Response:
    """POST a signed notice to a receiver (what an upstream system does)."""
    fields = {"projects_uri": projects_uri, "tags_uri": tags_uri, "source": source}
    fields["batch_id"] = batch_id
    body = json.dumps({k: v for k, v in fields.items() if v is not None}).encode()
    headers = {"Content-Type": "application/json", **sign(secret, body)}
    return httpx.post(url, content=body, headers=headers, timeout=30.0, trust_env=False)


def _local_defaults() -> tuple[str, str | None]:
    """The local platform's receiver URL and generated secret, when it wrote them."""
    settings = get_settings()
    record = read_record(settings, RECEIVER.name)
    url = record.url if record is not None else f"http://{HOST}:{RECEIVER.default_port}"
    return url + HOOK_PATH, stored_webhook_secret(settings)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m deployments.webhook PROJECTS_URI TAGS_URI``: send a signed notice."""
    default_url, platform_secret = _local_defaults()
    parser = argparse.ArgumentParser(
        prog="python -m deployments.webhook",
        description="Send a signed data-arrived notice to the webhook receiver.",
        epilog="The secret is $TAGIFAI_WEBHOOK_SECRET, else the local platform's generated one.",
    )
    parser.add_argument("projects_uri")
    parser.add_argument("tags_uri")
    parser.add_argument("--url", default=default_url, help=f"default: {default_url}")
    parser.add_argument("--source")
    parser.add_argument("--batch-id")
    args = parser.parse_args(argv)
    secret = os.environ.get("TAGIFAI_WEBHOOK_SECRET") or platform_secret
    if not secret:
        print("error: TAGIFAI_WEBHOOK_SECRET is not set", file=sys.stderr)
        return 1
    # The receiver only takes absolute paths; relative ones mean "relative to where I am".
    projects_uri, tags_uri = (
        uri if has_scheme(uri) else os.path.abspath(uri)
        for uri in (args.projects_uri, args.tags_uri)
    )
    try:
        response = send_data_arrived(
            args.url, secret, projects_uri, tags_uri, args.source, args.batch_id
        )
    except httpx.HTTPError as error:
        print(f"error: cannot reach {args.url}: {type(error).__name__}", file=sys.stderr)
        return 1
    print(f"{response.status_code} {response.text}")
    return 0 if response.status_code == 202 else 1
