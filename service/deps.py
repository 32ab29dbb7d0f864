"""Dependencies shared by the routes: settings and the model being served."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from model.predictor import Prediction, Predictor
from service.batching import Batcher
from service.settings import Settings, get_settings


@dataclass
class ServedModel:
    """The engine in front of the predictor, and the name the model is served under."""

    engine: Batcher
    name: str
    # Called with every response's predictions (the metrics count them by label).
    on_predictions: Callable[[Sequence[Prediction]], None] = lambda predictions: None

    @property
    def predictor(self) -> Predictor:
        return self.engine.predictor


# Both dependencies are ``async def`` and read ``app.state``: FastAPI runs a sync dependency in a
# thread pool and re-inspects an overridden one on every request, which cost ~40 % of /predict's
# event-loop time under load (see README, "Serving performance").
async def served_model(request: Request) -> ServedModel:
    served: ServedModel | None = request.app.state.served
    if served is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the model is not loaded yet")
    return served


async def app_settings(request: Request) -> Settings:
    """The settings the app was created with (``create_app`` stores them on ``app.state``)."""
    settings: Settings | None = getattr(request.app.state, "settings", None)
    return settings if settings is not None else get_settings()


SettingsDep = Annotated[Settings, Depends(app_settings)]
ServedDep = Annotated[ServedModel, Depends(served_model)]
