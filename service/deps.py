"""What the routes serve (the engine, its checkpoint, the model's name) and their dependencies."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from model.checkpoint import Checkpoint
from model.predictor import Prediction, Predictor
from service.engine import Engine
from service.runners import build_predictor
from service.settings import Settings


@dataclass
class ServedModel:
    """The engine, the checkpoint it runs (swapped by a reload), and the name clients use."""

    engine: Engine
    checkpoint: Checkpoint
    settings: Settings
    # Called with every response's predictions (the metrics count them by label).
    on_predictions: Callable[[Sequence[Prediction]], None] = lambda predictions: None
    _explainer: Predictor | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.settings.model_name

    def explainer(self) -> Predictor:
        """A predictor in this process for ``/explain``, built on first use and after a reload."""
        explainer = self._explainer
        if explainer is None or explainer.checkpoint is not self.checkpoint:
            explainer = self._explainer = build_predictor(self.settings, self.checkpoint)
        return explainer


def served_model(request: Request) -> ServedModel:
    served: ServedModel | None = request.app.state.served
    if served is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the model is not loaded yet; retry shortly")
    return served


# ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool, a hop per request.
async def _served(request: Request) -> ServedModel:
    return served_model(request)


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings  # the settings the app was created with
    return settings


SettingsDep = Annotated[Settings, Depends(_settings)]
ServedDep = Annotated[ServedModel, Depends(_served)]
