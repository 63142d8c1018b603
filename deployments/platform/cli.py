"""``python -m deployments.platform up|down|status|url``: the platform's command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict

from deployments.platform.errors import PlatformError
from deployments.platform.records import platform_dir
from deployments.platform.services import REGISTRY
from deployments.platform.spec import banner_line
from deployments.platform.supervisor import ServiceStatus, down, ensure_server, status, up
from deployments.platform.team import disable_team, enable_team, team_env_path
from tagifai.config import Settings, get_settings
from tagifai.errors import TagifaiError


def _print_urls(settings: Settings, urls: dict[str, str]) -> None:
    for spec in REGISTRY:
        if spec.name in urls:
            print("\n".join(spec.lines(settings, urls[spec.name])))
    print(banner_line("Logs", str(platform_dir(settings))))


def _print_status(statuses: dict[str, ServiceStatus], as_json: bool) -> None:
    if as_json:
        print(json.dumps({name: asdict(s) for name, s in statuses.items()}, indent=2))
        return
    for item in statuses.values():
        rss = f"{item.rss_bytes / 2**20:.0f} MiB" if item.rss_bytes else ""
        pid = f"pid {item.pid}" if item.pid else ""
        print(f"{item.service:<8} {item.state:<10} {pid:<11} {rss:>8}  {item.url or ''}".rstrip())


def print_error(error: TagifaiError) -> None:
    """One ``error:`` line on stderr, then a platform error's log tail if it has one."""
    if isinstance(error, PlatformError):
        print(f"error: {error.summary}", file=sys.stderr)
        if error.log_tail:
            print(error.log_tail, file=sys.stderr)
    else:
        print(f"error: {error}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    names = ", ".join(spec.name for spec in REGISTRY)
    parser = argparse.ArgumentParser(
        prog="python -m deployments.platform",
        description=f"The local platform's services: {names}.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    defaults = ", ".join(spec.name for spec in REGISTRY if spec.default)
    start = commands.add_parser("up", help=f"start services (default: {defaults}), print URLs")
    start.add_argument("services", nargs="*", metavar="SERVICE", help=names)
    mode = start.add_mutually_exclusive_group()
    mode.add_argument(
        "--team",
        action="store_true",
        help="switch this stores dir to team mode (PostgreSQL and Redis; stays on until "
        "--embedded) and start it",
    )
    mode.add_argument(
        "--embedded",
        action="store_true",
        help="switch back to the embedded SQLite stores (team data is kept under stores/team)",
    )
    commands.add_parser("down", help="stop the services this platform started")
    show = commands.add_parser("status", help="show each service's state")
    show.add_argument("--json", action="store_true", help="print JSON")
    commands.add_parser("url", help="print the Prefect API URL, starting the server if needed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    try:
        settings = get_settings()
        if args.command == "up" and (args.team or args.embedded):
            if args.team:
                enable_team(settings)
            else:
                disable_team(settings)
            settings = get_settings()
        if args.command == "up":
            started = time.monotonic()
            urls = up(settings, tuple(args.services) or None)
            _print_urls(settings, urls)
            mode = f"team ({team_env_path(settings)})" if settings.team else "embedded (SQLite)"
            print(banner_line("Mode", mode))
            print(f"Ready in {time.monotonic() - started:.1f} s")
        elif args.command == "down":
            stopped = down(settings)
            print(f"Stopped {', '.join(stopped)}" if stopped else "Nothing was running")
        elif args.command == "status":
            _print_status(status(settings), args.json)
        else:
            print(ensure_server(settings))
    except TagifaiError as error:
        print_error(error)
        return 1
    return 0
