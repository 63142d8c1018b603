"""The webhook receiver: every rejection path in-process, and one delivery to a real Prefect API."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
from starlette.testclient import TestClient

from deployments.platform import free_ports
from deployments.webhook import (
    EVENT_NAME,
    HOOK_PATH,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookConfigError,
    create_app,
    sign,
)
from deployments.webhook.receiver import _AppFromEnvironment
from tagifai.config import REPO_ROOT, Settings
from tests.conftest import settings_for

pytestmark = pytest.mark.e2e

SECRET = "test-secret-0123456789abcdef"
MAX_BYTES = 1024


TAGS_CSV = "id,tag\n1,mlops\n"


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = (tmp_path / "raw").resolve()
    root.mkdir()
    # Content of each test's own (one Prefect API serves the session: batches must differ).
    (root / "projects.csv").write_text(
        f"id,created_on,title,description\n1,2020-02-20 06:43:18,A title,{tmp_path.name}\n"
    )
    (root / "tags.csv").write_text(TAGS_CSV)
    with sqlite3.connect(root / "warehouse.db") as connection:
        pd.read_csv(root / "projects.csv").to_sql("projects", connection, index=False)
    (tmp_path / "secret.csv").write_text("not for the pipeline\n")
    return root


@pytest.fixture
def stores(tmp_path: Path) -> Settings:
    return settings_for(tmp_path / "stores")


@pytest.fixture
def client(data_root: Path, stores: Settings) -> Iterator[TestClient]:
    """A receiver whose Prefect API is a closed port: accepted notices end in 502."""
    app = create_app(
        SECRET,
        data_roots=[data_root],
        prefect_api_url=f"http://127.0.0.1:{free_ports()[0]}/api",
        max_bytes=MAX_BYTES,
        allowed_sql_hosts=["db.internal"],
        allowed_s3_buckets=["tagifai-landing"],
        settings=stores,
    )
    with TestClient(app) as test_client:
        yield test_client


def _post(
    client: TestClient,
    payload: dict | bytes,
    *,
    secret: str = SECRET,
    timestamp: int | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signed = sign(secret, body, timestamp)
    all_headers = {"Content-Type": "application/json", **signed, **(headers or {})}
    return client.post(HOOK_PATH, content=body, headers=all_headers)


def _good(data_root: Path) -> dict[str, str]:
    return {
        "projects_uri": str(data_root / "projects.csv"),
        "tags_uri": str(data_root / "tags.csv"),
    }


def test_health(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}


def test_missing_signature_headers_are_rejected(client: TestClient, data_root: Path) -> None:
    body = json.dumps(_good(data_root)).encode()
    response = client.post(HOOK_PATH, content=body)
    assert response.status_code == 401
    assert "missing" in response.json()["error"]


def test_signature_with_another_secret_is_rejected(client: TestClient, data_root: Path) -> None:
    response = _post(client, _good(data_root), secret="another-secret-0123456789")
    assert response.status_code == 401
    assert response.json() == {"error": "bad signature"}


def test_tampered_body_is_rejected(client: TestClient, data_root: Path) -> None:
    body = json.dumps(_good(data_root)).encode()
    headers = sign(SECRET, body)
    tampered = body.replace(b"projects.csv", b"projects.cs_")
    response = client.post(HOOK_PATH, content=tampered, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "bad signature"}


def test_replay_with_a_fresh_timestamp_is_rejected(client: TestClient, data_root: Path) -> None:
    body = json.dumps(_good(data_root)).encode()
    captured = sign(SECRET, body, int(time.time()) - 200)
    replayed = {**captured, TIMESTAMP_HEADER: str(int(time.time()))}
    response = client.post(HOOK_PATH, content=body, headers=replayed)
    assert response.status_code == 401
    assert response.json() == {"error": "bad signature"}


@pytest.mark.parametrize("offset_s", [-301, 301, -3600, 10**6])
def test_timestamps_outside_five_minutes_are_rejected(
    client: TestClient, data_root: Path, offset_s: int
) -> None:
    response = _post(client, _good(data_root), timestamp=int(time.time()) + offset_s)
    assert response.status_code == 401
    assert "timestamp" in response.json()["error"]


@pytest.mark.parametrize("stamp", ["abc", "-5", "1e9", "12345678901234"])
def test_malformed_timestamps_are_rejected(client: TestClient, data_root: Path, stamp: str) -> None:
    body = json.dumps(_good(data_root)).encode()
    headers = {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: "sha256=" + "0" * 64}
    response = client.post(HOOK_PATH, content=body, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "malformed timestamp"}


def test_oversized_body_is_rejected_by_content_length(client: TestClient) -> None:
    body = json.dumps({"projects_uri": "x" * MAX_BYTES, "tags_uri": "y"}).encode()
    response = _post(client, body)
    assert response.status_code == 413
    assert str(MAX_BYTES) in response.json()["error"]


def test_oversized_chunked_body_is_rejected_while_streaming(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"x" * 512

    headers = sign(SECRET, b"irrelevant")
    response = client.post(HOOK_PATH, content=chunks(), headers=headers)
    assert response.status_code == 413
    assert "content-length" not in {k.lower() for k in response.request.headers}


def test_malformed_json_is_rejected(client: TestClient) -> None:
    response = _post(client, b'{"projects_uri": ')
    assert response.status_code == 400
    assert response.json() == {"error": "body is not valid JSON"}


def test_non_utf8_body_is_rejected(client: TestClient) -> None:
    response = _post(client, b"\xff\xfe{}")
    assert response.status_code == 400


def test_unknown_field_is_rejected(client: TestClient, data_root: Path) -> None:
    response = _post(client, {**_good(data_root), "command": "rm -rf /"})
    assert response.status_code == 422
    assert response.json() == {"error": "unknown field 'command'"}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"projects_uri": "/a.csv"}, "tags_uri: Field required"),
        ([1, 2], "body: "),
        ({"projects_uri": "/a", "tags_uri": "/b", "batch_id": "x" * 65}, "batch_id: "),
        ({"projects_uri": "/a", "tags_uri": "/b", "source": "a b;c"}, "source: "),
    ],
)
def test_invalid_payload_is_rejected(client: TestClient, payload: object, reason: str) -> None:
    response = _post(client, json.dumps(payload).encode())
    assert response.status_code == 422
    assert response.json()["error"].startswith(reason)


def test_dotdot_escape_is_rejected(client: TestClient, data_root: Path) -> None:
    payload = {**_good(data_root), "projects_uri": f"{data_root}/../secret.csv"}
    response = _post(client, payload)
    assert response.status_code == 422
    assert response.json() == {"error": "projects_uri: path is outside the allowed data root"}


def test_symlink_escape_is_rejected(client: TestClient, data_root: Path) -> None:
    (data_root / "innocent.csv").symlink_to(data_root.parent / "secret.csv")
    (data_root / "linked_dir").symlink_to("/etc", target_is_directory=True)
    for uri in (str(data_root / "innocent.csv"), f"file://{data_root}/linked_dir/passwd"):
        response = _post(client, {**_good(data_root), "tags_uri": uri})
        assert response.status_code == 422, uri
        assert response.json() == {"error": "tags_uri: path is outside the allowed data root"}


def test_sibling_directory_with_the_root_as_prefix_is_rejected(
    client: TestClient, data_root: Path
) -> None:
    sibling = data_root.parent / (data_root.name + "-evil")
    sibling.mkdir()
    response = _post(client, {**_good(data_root), "projects_uri": str(sibling / "p.csv")})
    assert response.status_code == 422


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("/etc/passwd", "path is outside the allowed data root"),
        ("projects.csv", "path must be absolute"),
        ("~/projects.csv", "path must be absolute"),
        ("http://example.org/projects.csv", "scheme 'http' is not allowed"),
        ("https://example.org/projects.csv", "scheme 'https' is not allowed"),
        ("ftp://example.org/projects.csv", "scheme 'ftp' is not allowed"),
        ("s3://someone-elses-bucket/projects.csv", "S3 bucket is not in"),
        ("file://remote.host/data/projects.csv", "file URIs must be file:///absolute/path"),
        ("sqlite:///relative.db#projects", "path must be absolute"),
        ("sqlite:////etc/warehouse.db#projects", "path is outside the allowed data root"),
        ("postgresql://elsewhere.example/db#projects", "SQL host is not in"),
        ("postgresql+psycopg://user:pw@db.internal/db#projects", "credentials are not accepted"),
        ("postgresql://db.internal/db?host=evil.example#projects", "PostgreSQL URIs may not"),
        ("postgresql://db.internal/db", "SQL URIs need a '#<table>'"),
        ("postgresql://db.internal/db#a#b", "SQL URIs need a '#<table>'"),
        ("postgresql://db.internal/db#drop table", "SQL URIs need a '#<table>'"),
        ("mysql://db.internal/db#projects", "scheme 'mysql' is not allowed"),
        ("javascript:alert(1)", "scheme 'javascript' is not allowed"),
    ],
)
def test_disallowed_uris_are_rejected(
    client: TestClient, data_root: Path, uri: str, reason: str
) -> None:
    response = _post(client, {**_good(data_root), "projects_uri": uri})
    assert response.status_code == 422, response.text
    assert response.json()["error"].startswith("projects_uri: " + reason)


def test_sqlite_inside_root_with_percent_escape_is_rejected(
    client: TestClient, data_root: Path
) -> None:
    uri = f"sqlite:///{data_root}/%2e%2e/x.db#projects"
    response = _post(client, {**_good(data_root), "projects_uri": uri})
    assert response.status_code == 422


@pytest.mark.parametrize(
    "uri_template",
    [
        "{root}/projects.csv",
        "file://{root}/projects.csv",
        "file://localhost{root}/projects.csv",
        "{root}/sub/../projects.csv",
        "sqlite:///{root}/warehouse.db#projects",
    ],
)
def test_allowed_uris_reach_prefect(client: TestClient, data_root: Path, uri_template: str) -> None:
    """Allowed, readable URIs pass every check; the closed Prefect port then makes a 502."""
    (data_root / "sub").mkdir(exist_ok=True)
    payload = {**_good(data_root), "projects_uri": uri_template.format(root=data_root)}
    response = _post(client, payload)
    assert response.status_code == 502
    assert response.json()["error"].startswith("Prefect API unreachable")


@pytest.mark.parametrize(
    ("uri", "status", "reason"),
    [
        ("postgresql+psycopg://reader@db.internal:5432/landing#projects", 503, "cannot reach"),
        ("{root}/tags.csv", 422, "projects source {root}/tags.csv lacks column(s)"),
        ("{root}/missing.csv", 422, "source not found"),
        ("sqlite:///{root}/warehouse.db#nope", 422, "cannot read table 'nope'"),
    ],
)
def test_allowed_uris_that_cannot_be_read_are_refused_in_one_line(
    client: TestClient, data_root: Path, stores: Settings, uri: str, status: int, reason: str
) -> None:
    """The receiver reads the tables to fingerprint the batch: unreadable ones start nothing
    (503 when the database cannot be reached now: retry later), and claim nothing."""
    payload = {**_good(data_root), "projects_uri": uri.format(root=data_root)}
    response = _post(client, payload)
    assert response.status_code == status, response.text
    assert response.json()["error"].startswith(reason.format(root=data_root))
    assert "\n" not in response.json()["error"]
    assert _post(client, payload).status_code == status  # released: not mistaken for a replay


def test_a_replayed_request_gets_409_and_creates_nothing(
    client: TestClient, data_root: Path, stores: Settings, prefect_api: str
) -> None:
    body = json.dumps(_good(data_root)).encode()
    headers = {"Content-Type": "application/json", **sign(SECRET, body)}
    app = create_app(SECRET, data_roots=[data_root], prefect_api_url=prefect_api, settings=stores)
    with TestClient(app) as live:
        first = live.post(HOOK_PATH, content=body, headers=headers)
        again = live.post(HOOK_PATH, content=body, headers=headers)
    with TestClient(create_app(SECRET, data_roots=[data_root], settings=stores)) as restarted:
        after_restart = restarted.post(HOOK_PATH, content=body, headers=headers)
    assert first.status_code == 202, first.text
    assert again.status_code == after_restart.status_code == 409
    assert again.json() == {"error": "this signed request was already accepted: a replay"}
    emitted = first.json()["event_id"]
    assert _events_for(prefect_api, first.json()["batch_id"], emitted) == [emitted]


def test_concurrent_identical_requests_give_exactly_one_202(
    data_root: Path, stores: Settings, prefect_api: str
) -> None:
    body = json.dumps(_good(data_root)).encode()
    headers = {"Content-Type": "application/json", **sign(SECRET, body)}
    app = create_app(SECRET, data_roots=[data_root], prefect_api_url=prefect_api, settings=stores)
    statuses: list[int] = []
    start = threading.Barrier(4)

    def send() -> None:
        with TestClient(app) as own:
            start.wait()
            statuses.append(own.post(HOOK_PATH, content=body, headers=headers).status_code)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [202, 409, 409, 409]


def test_the_same_data_again_is_a_duplicate_that_starts_nothing(
    data_root: Path, stores: Settings, prefect_api: str
) -> None:
    """A new signature, another path, the same content: one batch, one event (the sensor
    shares this ledger, so data it already sent is a duplicate here too)."""
    copy = data_root / "again"
    copy.mkdir()
    for name in ("projects.csv", "tags.csv"):
        (copy / name).write_bytes((data_root / name).read_bytes())
    app = create_app(SECRET, data_roots=[data_root], prefect_api_url=prefect_api, settings=stores)
    with TestClient(app) as live:
        first = _post(live, _good(data_root))
        second = _post(
            live, {"projects_uri": str(copy / "projects.csv"), "tags_uri": str(copy / "tags.csv")}
        )
    assert first.status_code == 202 and second.status_code == 200
    batch_id = first.json()["batch_id"]
    assert second.json()["duplicate"] is True and second.json()["batch_id"] == batch_id
    assert "already received from webhook" in second.json()["reason"]
    emitted = first.json()["event_id"]
    assert _events_for(prefect_api, batch_id, emitted) == [emitted]


def test_a_failed_emit_can_be_retried(
    client: TestClient, data_root: Path, stores: Settings, prefect_api: str
) -> None:
    body = json.dumps(_good(data_root)).encode()
    headers = {"Content-Type": "application/json", **sign(SECRET, body)}
    assert client.post(HOOK_PATH, content=body, headers=headers).status_code == 502
    app = create_app(SECRET, data_roots=[data_root], prefect_api_url=prefect_api, settings=stores)
    with TestClient(app) as live:
        retried = live.post(HOOK_PATH, content=body, headers=headers)
    assert retried.status_code == 202, retried.text


def _events_for(api_url: str, batch_id: str, emitted: str) -> list[str]:
    """Ids of the ``tagifai.data.arrived`` events the API holds for a batch, once the one
    that was emitted is stored (the server persists events asynchronously)."""
    _read_event(api_url, emitted)
    time.sleep(1.0)  # time for any other event of the batch to be stored too
    response = httpx.post(
        f"{api_url}/events/filter",
        json={"filter": {"resource": {"id": [f"tagifai.data.{batch_id}"]}}, "limit": 50},
        timeout=10,
    )
    response.raise_for_status()
    return [event["id"] for event in response.json()["events"]]


def test_secret_and_signature_never_reach_logs_or_responses(
    client: TestClient, data_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = json.dumps(_good(data_root)).encode()
    wrong = sign("wrong-secret-0123456789", body)
    response = client.post(HOOK_PATH, content=body, headers=wrong)
    good = _post(client, _good(data_root))
    assert response.status_code == 401 and good.status_code == 502
    text = caplog.text + response.text + good.text
    assert SECRET not in text
    assert wrong[SIGNATURE_HEADER].removeprefix("sha256=") not in text
    assert "bad signature" in caplog.text  # the rejection itself is logged


def test_missing_secret_refuses_to_build() -> None:
    with pytest.raises(WebhookConfigError, match="TAGIFAI_WEBHOOK_SECRET is not set"):
        create_app(None, env={}, data_roots=["/tmp"])
    with pytest.raises(WebhookConfigError, match="too short"):
        create_app("short", data_roots=["/tmp"])


def test_unconfigured_module_app_answers_503(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TAGIFAI_WEBHOOK_SECRET", raising=False)
    lazy_app = _AppFromEnvironment()
    response = TestClient(lazy_app).post(HOOK_PATH, content=b"{}")
    assert response.status_code == 503
    assert response.json() == {"error": "webhook receiver is not configured"}


def test_uvicorn_refuses_to_start_without_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TAGIFAI_WEBHOOK_SECRET"}
    command = [
        sys.executable, "-m", "uvicorn", "deployments.webhook:app",
        "--host", "127.0.0.1", "--port", str(free_ports()[0]), "--lifespan", "on",
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "TAGIFAI_WEBHOOK_SECRET is not set" in result.stderr


def _read_event(api_url: str, event_id: str, timeout_s: float = 30.0) -> dict:
    """Poll the events API: the server persists events asynchronously."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = httpx.post(
            f"{api_url}/events/filter",
            json={"filter": {"id": {"id": [event_id]}}, "limit": 5},
            timeout=10,
        )
        response.raise_for_status()
        events = response.json()["events"]
        if events:
            return events[0]
        time.sleep(0.5)
    raise AssertionError(f"event {event_id} never appeared in {api_url}")


def test_signed_notice_becomes_a_prefect_event(
    prefect_api: str, data_root: Path, stores: Settings
) -> None:
    from tagifai.extract import content_id, read_table

    app = create_app(SECRET, data_roots=[data_root], prefect_api_url=prefect_api, settings=stores)
    payload = {
        "projects_uri": f"{data_root}/sub/../projects.csv",
        "tags_uri": f"file://{data_root}/tags.csv",
        "source": "pytest",
        "batch_id": "batch-42",
    }
    with TestClient(app) as client:
        response = _post(client, payload)
    assert response.status_code == 202, response.text
    event_id = response.json()["event_id"]

    # The batch id is the content: the snapshot id dataops will compute from these tables.
    snapshot_id = content_id(
        read_table(str(data_root / "projects.csv"), "projects"),
        read_table(str(data_root / "tags.csv"), "tags"),
    )
    event = _read_event(prefect_api, event_id)
    assert event["event"] == EVENT_NAME
    assert event["resource"]["prefect.resource.id"] == f"tagifai.data.{snapshot_id}"
    assert event["payload"] == {
        "projects_uri": str(data_root / "projects.csv"),  # canonical: what was checked
        "tags_uri": str(data_root / "tags.csv"),
        "batch_id": snapshot_id,
        "label": "batch-42",
        "source": "webhook:pytest",
    }


def test_data_docs_are_served_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAGIFAI_STORES_DIR", str(tmp_path / "stores"))
    site = tmp_path / "stores" / "gx" / "data_docs" / "local_site"
    site.mkdir(parents=True)
    (site / "index.html").write_text("<html>data docs</html>")
    app = create_app(SECRET, data_roots=[tmp_path], prefect_api_url="http://127.0.0.1:9/api")
    with TestClient(app) as test_client:
        assert test_client.get("/data-docs/index.html").text == "<html>data docs</html>"
        assert test_client.get("/data-docs/").status_code == 200
        assert test_client.get("/data-docs/../../webhook-secret").status_code == 404
        assert test_client.post("/data-docs/index.html").status_code == 405


def test_data_docs_follow_the_configuration_the_app_was_built_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``env`` and ``docs_dir`` decide which site is served, not the process's environment."""
    sites = {}
    for name in ("process", "given", "explicit"):
        sites[name] = tmp_path / name / "gx" / "data_docs" / "local_site"
        sites[name].mkdir(parents=True)
        (sites[name] / "index.html").write_text(f"<html>{name}</html>")
    monkeypatch.setenv("TAGIFAI_STORES_DIR", str(tmp_path / "process"))
    common = {"data_roots": [tmp_path], "prefect_api_url": "http://127.0.0.1:9/api"}
    apps = {
        "given": create_app(SECRET, env={"TAGIFAI_STORES_DIR": str(tmp_path / "given")}, **common),
        "explicit": create_app(SECRET, docs_dir=sites["explicit"], **common),
    }
    for name, app in apps.items():
        with TestClient(app) as test_client:
            assert test_client.get("/data-docs/index.html").text == f"<html>{name}</html>"
