"""Loopback ports and HTTP health: free ports, a service's port, a 200 from a URL."""

from __future__ import annotations

import contextlib
import logging
import os
import socket

import httpx

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # uvicorn binds with SO_REUSEADDR too, so sockets in TIME_WAIT don't count as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_ports(count: int = 1) -> list[int]:
    """``count`` distinct ports that are free on the loopback now (all held while choosing)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]


def choose_port(service: str, port_env: str, default_port: int) -> int:
    """``$port_env`` or ``default_port``; a free port instead when that one is taken (or 0)."""
    wanted = int(os.environ.get(port_env) or default_port)
    if wanted and _port_is_free(wanted):
        return wanted
    port = free_ports()[0]
    if wanted:
        logger.warning("Port %d for %s is taken; using %d", wanted, service, port)
    return port


def http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    """True if a GET of ``url`` answers 200 within 3 s."""
    try:
        # Loopback only: never route through a proxy from the environment.
        response = httpx.get(url, headers=headers, timeout=3.0, trust_env=False)
    except httpx.HTTPError:
        return False
    return response.status_code == 200
