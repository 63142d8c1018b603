"""The registry: every service of the platform, one spec each, in dependency order.

Adding a service is one module here defining ``SPEC = ServiceSpec(...)`` (see
``deployments.platform.spec``) and one line in :data:`REGISTRY`. ``up`` starts services in
registry order and ``down`` stops them in reverse, so a service comes after the services it
requires or whose records it reads (the worker links to the MLflow UI, the receiver and the
Dask cluster).
"""

from __future__ import annotations

from deployments.platform.services import (
    dask_scheduler,
    dask_workers,
    mlflow,
    postgres,
    predict,
    redis,
    sensor,
    server,
    webhook,
    worker,
)
from deployments.platform.spec import ServiceSpec

REGISTRY: tuple[ServiceSpec, ...] = (
    postgres.SPEC,  # team mode only (required by the others' team_requires)
    redis.SPEC,
    server.SPEC,
    mlflow.SPEC,
    webhook.SPEC,
    sensor.SPEC,
    dask_scheduler.SPEC,
    dask_workers.SPEC,
    worker.SPEC,
    predict.SPEC,
)
# What `up` starts when no service is named.
SERVICES: tuple[str, ...] = tuple(spec.name for spec in REGISTRY if spec.default)
# The team mode's stores: started with the server when team mode is on.
TEAM_SERVICES: tuple[str, ...] = (postgres.SPEC.name, redis.SPEC.name)
