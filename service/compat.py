"""Standard request shapes on the same batching engine: Hugging Face text-classification and the Open
Inference Protocol (KServe V2), each with its own error shape, ``{"error": "..."}``.

Hugging Face: ``POST /models/{name}`` with ``{"inputs": str | [str], "parameters": {"top_k": k}}``
answers one list of ``{"label", "score"}`` per input, best first, as the hosted Inference API does (so
``huggingface_hub.InferenceClient(model=URL).text_classification`` works against it).

Open Inference Protocol: ``/v2``, ``/v2/health/{live,ready}``, ``/v2/models/{name}[/versions/{v}]``
(metadata), ``.../ready`` and ``.../infer``, with one BYTES input tensor of texts and three outputs:
``label`` (BYTES [N]), ``score`` (FP32 [N]) and ``probabilities`` (FP32 [N, L], label names in its
``labels`` parameter). A health check that fails answers 400, as the protocol asks (4xx means false).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from importlib.metadata import version as package_version
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from model.predictor import Prediction
from service.errors import ProtocolRoute, error_response
from service.routes import ServedDep, SettingsDep, run_predictions

SERVER_NAME = "lstm-sentiment"
Parameters = dict[str, str | int | float | bool]


def _check_name(name: str, served: ServedDep, version: str | None = None) -> None:
    if name != served.name:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"unknown model {name!r}; this server has {served.name!r}"
        )
    current = served.checkpoint.version
    if version is not None and version != current:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"model {name!r} has no version {version!r}; it is {current!r}"
        )


# --- Hugging Face text-classification ------------------------------------------------------------


class HFParameters(BaseModel):
    model_config = ConfigDict(extra="ignore")

    top_k: int | None = Field(None, ge=1, description="keep the k most probable labels (default: all)")
    function_to_apply: Literal["softmax"] | None = Field(
        None, description="only softmax: the model is a single-label classifier"
    )


class HFRequest(BaseModel):
    model_config = ConfigDict(
        extra="ignore",  # e.g. the hosted API's "options": {"wait_for_model": true}
        json_schema_extra={"examples": [{"inputs": "I love it", "parameters": {"top_k": 2}}]},
    )

    inputs: str | Annotated[list[str], Field(min_length=1)] = Field(description="a text or a list of texts")
    parameters: HFParameters = Field(default_factory=HFParameters)


class HFLabelScore(BaseModel):
    label: str
    score: float


ERROR = error_response("what went wrong, under `detail` and `error`")
hf = APIRouter(tags=["hugging face"], route_class=ProtocolRoute)


@hf.post(
    "/models/{name}",
    response_model=list[list[HFLabelScore]],
    responses={400: ERROR, 404: ERROR, 413: ERROR, 503: ERROR},
)
async def hf_text_classification(
    name: str, body: HFRequest, settings: SettingsDep, served: ServedDep
) -> list[list[HFLabelScore]]:
    """Hugging Face Inference API text-classification: per input, labels and scores, best first."""
    _check_name(name, served)
    texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
    for i, text in enumerate(texts):
        if not text.strip():
            where = "inputs" if isinstance(body.inputs, str) else f"inputs.{i}"
            raise HTTPException(status.HTTP_400_BAD_REQUEST, f"{where}: needs a non-whitespace character")
    result = await run_predictions(served, settings, texts, where="inputs")
    k = body.parameters.top_k
    return [
        [HFLabelScore(label=label, score=p) for label, p in _ranked(r.probabilities)[:k]]
        for r in result.predictions
    ]


def _ranked(probabilities: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(probabilities.items(), key=lambda item: item[1], reverse=True)


# --- Open Inference Protocol (KServe V2) -----------------------------------------------------------


class V2Input(BaseModel):
    name: str
    shape: list[Annotated[int, Field(ge=0)]] = Field(min_length=1, max_length=2)
    datatype: Literal["BYTES"] = Field(description="texts are BYTES, sent as JSON strings")
    parameters: Parameters | None = None
    data: list[Any] = Field(description="the texts, flat or nested in row-major order")


class V2OutputRequest(BaseModel):
    name: Literal["label", "score", "probabilities"]
    parameters: Parameters | None = None


class V2InferRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "inputs": [
                        {"name": "text", "shape": [2], "datatype": "BYTES", "data": ["I love it", "awful"]}
                    ]
                }
            ]
        }
    )

    id: str | None = None
    parameters: Parameters | None = None
    inputs: list[V2Input] = Field(min_length=1, max_length=1, description="one tensor: the texts")
    outputs: list[V2OutputRequest] | None = Field(None, description="which outputs to return (default: all)")


class V2Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[Any]


class V2InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str
    parameters: Parameters | None = None
    outputs: list[V2Tensor]


class V2TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


v2 = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"], route_class=ProtocolRoute)
V2_ERRORS: dict[int | str, dict[str, Any]] = {400: ERROR, 404: ERROR, 413: ERROR, 503: ERROR}


@v2.get("", response_model=V2ServerMetadata)
async def v2_server_metadata() -> V2ServerMetadata:
    """Server metadata: name, version and protocol extensions (none)."""
    return V2ServerMetadata(name=SERVER_NAME, version=package_version(SERVER_NAME), extensions=[])


@v2.get("/health/live")
async def v2_live() -> dict[str, bool]:
    """Liveness: the server answers."""
    return {"live": True}


@v2.get("/health/ready", responses={400: {"description": "not ready"}})
async def v2_ready(request: Request) -> JSONResponse:
    """Readiness: the model is loaded (400, not 503: the protocol says 4xx means false)."""
    ready = request.app.state.served is not None
    return JSONResponse({"ready": ready}, status.HTTP_200_OK if ready else status.HTTP_400_BAD_REQUEST)


@v2.get("/models/{name}", response_model=V2ModelMetadata, responses=V2_ERRORS)
@v2.get("/models/{name}/versions/{version}", response_model=V2ModelMetadata, responses=V2_ERRORS)
async def v2_model_metadata(name: str, served: ServedDep, version: str | None = None) -> V2ModelMetadata:
    """Model metadata: the input tensor (texts) and the three output tensors."""
    _check_name(name, served, version)
    labels = len(served.checkpoint.labels)
    return V2ModelMetadata(
        name=served.name,
        versions=[served.checkpoint.version],
        platform="pytorch_lstm",
        inputs=[V2TensorMetadata(name="text", datatype="BYTES", shape=[-1])],
        outputs=[
            V2TensorMetadata(name="label", datatype="BYTES", shape=[-1]),
            V2TensorMetadata(name="score", datatype="FP32", shape=[-1]),
            V2TensorMetadata(name="probabilities", datatype="FP32", shape=[-1, labels]),
        ],
    )


@v2.get("/models/{name}/ready", responses=V2_ERRORS)
@v2.get("/models/{name}/versions/{version}/ready", responses=V2_ERRORS)
async def v2_model_ready(name: str, served: ServedDep, version: str | None = None) -> dict[str, Any]:
    """Model readiness: 200 once loaded (before that, 503 with an error)."""
    _check_name(name, served, version)
    return {"name": name, "ready": True}


# Optional fields are left out, not sent as null: the protocol's "parameters" is an object when present.
@v2.post(
    "/models/{name}/infer",
    response_model=V2InferResponse,
    responses=V2_ERRORS,
    response_model_exclude_none=True,
)
@v2.post(
    "/models/{name}/versions/{version}/infer",
    response_model=V2InferResponse,
    responses=V2_ERRORS,
    response_model_exclude_none=True,
)
async def v2_infer(
    name: str, body: V2InferRequest, settings: SettingsDep, served: ServedDep, version: str | None = None
) -> V2InferResponse:
    """Classify a BYTES tensor of texts; outputs label, score and probabilities, in input order."""
    _check_name(name, served, version)
    labels = served.checkpoint.labels
    texts = _texts(body.inputs[0])
    result = await run_predictions(served, settings, texts, where=f"inputs.{body.inputs[0].name}")
    wanted = [o.name for o in body.outputs] if body.outputs else ["label", "score", "probabilities"]
    return V2InferResponse(
        model_name=served.name,
        model_version=result.version,
        id=body.id if body.id is not None else str(uuid.uuid4()),
        outputs=[_output(name, result.predictions, labels) for name in wanted],
    )


def _texts(tensor: V2Input) -> list[str]:
    data = _flatten(tensor.data)
    if math.prod(tensor.shape) != len(data):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"input {tensor.name!r}: shape {tensor.shape} holds {math.prod(tensor.shape)} elements "
            f"but data has {len(data)}",
        )
    if len(tensor.shape) == 2 and tensor.shape[1] != 1:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, f"input {tensor.name!r}: shape must be [N] or [N, 1]"
        )
    if not data:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"input {tensor.name!r}: no texts")
    for i, text in enumerate(data):
        if not isinstance(text, str) or not text.strip():
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                f"input {tensor.name!r}: element {i} must be a string with a non-whitespace character",
            )
    return data


def _flatten(data: Sequence[Any]) -> list[Any]:
    flat: list[Any] = []
    for item in data:
        flat.extend(_flatten(item) if isinstance(item, list) else [item])
    return flat


def _output(name: str, results: list[Prediction], labels: list[str]) -> V2Tensor:
    n = len(results)
    if name == "label":
        return V2Tensor(name=name, shape=[n], datatype="BYTES", data=[r.label for r in results])
    if name == "score":
        return V2Tensor(name=name, shape=[n], datatype="FP32", data=[r.score for r in results])
    return V2Tensor(
        name=name,
        shape=[n, len(labels)],
        datatype="FP32",
        parameters={"labels": ",".join(labels)},
        data=[r.probabilities[label] for r in results for label in labels],
    )


router = APIRouter()
router.include_router(hf)
router.include_router(v2)
