"""The prediction service: ``models:/tagifai@production`` over HTTP, every prediction logged.

Routes:
    POST /predict   {"title", "description"?, "id"?} -> {"model_version", "tag", "confidence",
                    "probabilities"}; or {"projects": [...]} (at most TAGIFAI_PREDICT_MAX_BATCH,
                    256) -> {"model_version", "predictions": [{"id"?, "tag", ...}]}
    GET  /health    {"status", "model_version", "loaded_at", "prediction_log": {...}}

Stack: Starlette under uvicorn, as the webhook receiver. MLflow's own scoring server
(``mlflow models serve``) loads one model URI when it starts, so it serves a new production
version only after a restart, and it offers no hook to log monitoring features per prediction.

Modules: ``model`` (the served model, swapped when the alias moves: checked every
``TAGIFAI_PREDICT_RELOAD_SECONDS``, 5 s), ``app`` (routes and validation). Predictions go to
the prediction log (``tagifai.predlog``) through a buffer written every
``TAGIFAI_PREDICTION_LOG_FLUSH_ROWS`` rows or ``TAGIFAI_PREDICTION_LOG_FLUSH_SECONDS`` seconds,
and when the service stops; ``TAGIFAI_PREDICTION_LOG=false`` turns logging off.

    uvicorn deployments.serve:app --port 8000      # or: make up (service "predict")
"""

from deployments.serve.app import Batch, Project, create_app
from deployments.serve.model import ModelHolder

app = create_app()

__all__ = ["Batch", "ModelHolder", "Project", "app", "create_app"]
