"""Preloaded by each worker of the platform's Dask cluster (``dask worker --preload``).

Imports the flows and the libraries their tasks use before the worker joins the scheduler,
so no flow run pays for them and the first one is as fast as the next.
"""

from __future__ import annotations

import importlib
import logging
import time

logger = logging.getLogger(__name__)

WARM: tuple[str, ...] = (
    "flows.dataops",
    "flows.mlops",
    "great_expectations",
    "feast",
    "dask.dataframe",
    "sklearn.feature_extraction.text",
    "sklearn.linear_model",
    "sklearn.svm",
    "sklearn.calibration",
    "sklearn.model_selection",
    "optuna",
    "mlflow",
    "onnxruntime",
    "tagifai.blocks",
    "tagifai.validation",
    "tagifai.store",
)


def dask_setup(worker: object) -> None:
    """Import :data:`WARM` (Dask calls this when the worker starts)."""
    started = time.perf_counter()
    for module in WARM:
        importlib.import_module(module)
    logger.warning(
        "tagifai preload: %d modules in %.1f s", len(WARM), time.perf_counter() - started
    )
