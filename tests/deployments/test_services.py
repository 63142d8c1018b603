"""The service registry drives up/status/down: tiny real services declared in the test."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from deployments.platform import (
    HOST,
    Launch,
    LaunchContext,
    PlatformError,
    ServiceSpec,
    down,
    platform_dir,
    status,
    up,
)
from deployments.platform.ports import http_ok
from deployments.platform.spec import child_env, python_command
from tagifai.config import Settings
from tests.conftest import settings_for


def _serve(directory: Path) -> ServiceSpec:
    """A static file server on a free port: the smallest HTTP service there is."""

    def build(context: LaunchContext) -> Launch:
        port = str(context.port)
        cmd = python_command("http.server", port, "--bind", HOST, "--directory", str(directory))
        return Launch(cmd, child_env(context.settings), f"http://{HOST}:{port}")

    return ServiceSpec(
        name="files",
        label="Files",
        log_name="files.log",
        build=build,
        healthy=lambda settings, url, api_url: http_ok(f"{url}/"),
        startup_timeout_s=20.0,
        port_env="TAGIFAI_TEST_FILES_PORT",  # unset: default_port 0 means any free port
    )


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    """Stores of the test's own; whatever a test leaves running is stopped afterwards."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "hello.txt").write_text("hello")
    settings = settings_for(tmp_path / "stores")
    try:
        yield settings
    finally:
        down(settings, ())  # an empty registry: every recorded service counts as unregistered


def test_a_registered_service_goes_up_reports_status_and_goes_down(settings: Settings) -> None:
    files = _serve(settings.stores_dir.parent / "site")
    registry = (files,)

    urls = up(settings, registry=registry)  # the default set: every spec marked default
    assert list(urls) == ["files"]
    assert httpx.get(f"{urls['files']}/hello.txt", trust_env=False).text == "hello"
    running = status(settings, registry)["files"]
    assert (running.state, running.url) == ("running", urls["files"])
    assert running.pid and running.rss_bytes and running.rss_bytes > 2**20
    assert (platform_dir(settings) / "files.log").exists()

    assert up(settings, ("files",), registry) == urls  # idempotent: reused, not restarted
    assert status(settings, registry)["files"].pid == running.pid

    process = psutil.Process(running.pid)
    assert down(settings, registry) == ["files"]
    assert not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    assert status(settings, registry)["files"].state == "stopped"
    assert not list(platform_dir(settings).glob("*.json"))
    assert down(settings, registry) == []


def test_requirements_join_the_plan_and_start_first(settings: Settings) -> None:
    files = _serve(settings.stores_dir.parent / "site")
    mirror = dataclasses.replace(files, name="mirror", log_name="mirror.log", requires=("files",))
    urls = up(settings, ("mirror",), (files, mirror))
    assert list(urls) == ["files", "mirror"]
    assert urls["files"] != urls["mirror"]
    with pytest.raises(PlatformError, match="mirror requires files, registered before it"):
        up(settings, ("files",), (mirror, files))
    # Services that left the registry are still stopped by `down`.
    assert sorted(down(settings, ())) == ["files", "mirror"]


def test_a_service_that_dies_at_start_up_reports_its_log_and_leaves_no_record(
    settings: Settings,
) -> None:
    def build(context: LaunchContext) -> Launch:
        cmd = (sys.executable, "-c", "import sys; print('no such thing'); sys.exit(3)")
        return Launch(cmd, child_env(context.settings), "nowhere")

    broken = ServiceSpec(name="broken", label="Broken", log_name="broken.log", build=build)
    with pytest.raises(PlatformError, match="broken exited during start-up") as raised:
        up(settings, registry=(broken,))
    assert "no such thing" in raised.value.log_tail
    assert status(settings, (broken,))["broken"].state == "stopped"
    assert not (platform_dir(settings) / "broken.json").exists()


def test_unknown_services_are_named_with_the_choices(settings: Settings) -> None:
    files = _serve(settings.stores_dir.parent / "site")
    with pytest.raises(PlatformError, match=r"unknown service\(s\) nope; choose from \('files',\)"):
        up(settings, ("nope",), (files,))
