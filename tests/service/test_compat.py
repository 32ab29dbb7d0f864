"""Hugging Face and Open Inference Protocol (KServe V2) shapes, validated against their published schemas.

The schemas below are transcribed from the specifications (no network): the Hugging Face tasks spec
for text-classification (``@huggingface/tasks``, ``text-classification/spec/{input,output}.json``) and
the Open Inference Protocol's REST section (``$inference_request``, ``$inference_response``,
``$metadata_server_response``, ``$metadata_model_response``, health and error objects). They are strict
(no extra fields, no nulls where the spec has an optional field), so a stray ``"parameters": null``
fails.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Literal

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr, TypeAdapter

from service.app import create_app
from service.engine import EngineUnavailable, QueueFull
from service.settings import Settings

# --- Hugging Face tasks spec: text-classification ----------------------------------------------------


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class HFParameters(Spec):
    function_to_apply: Literal["sigmoid", "softmax", "none"] | None = None
    top_k: StrictInt | None = None


class HFInput(Spec):
    inputs: StrictStr
    parameters: HFParameters | None = None


class HFOutputElement(Spec):
    label: StrictStr
    score: StrictFloat


HF_OUTPUT = TypeAdapter(list[HFOutputElement])  # TextClassificationOutput

# --- Open Inference Protocol, REST ---------------------------------------------------------------

DATATYPES = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
]  # fmt: skip
Parameter = StrictStr | StrictInt | StrictFloat | StrictBool


class Tensor(Spec):  # $request_input and $response_output
    name: StrictStr
    shape: list[StrictInt]
    datatype: DATATYPES
    parameters: dict[str, Parameter] | None = None
    data: list[object]


class RequestOutput(Spec):
    name: StrictStr
    parameters: dict[str, Parameter] | None = None


class InferenceRequest(Spec):
    id: StrictStr | None = None
    parameters: dict[str, Parameter] | None = None
    inputs: list[Tensor]
    outputs: list[RequestOutput] | None = None


class InferenceResponse(Spec):
    model_name: StrictStr
    model_version: StrictStr | None = None
    id: StrictStr
    parameters: dict[str, Parameter] | None = None
    outputs: list[Tensor]


class MetadataTensor(Spec):
    name: StrictStr
    datatype: DATATYPES
    shape: list[StrictInt]


class MetadataModelResponse(Spec):
    name: StrictStr
    versions: list[StrictStr] | None = None
    platform: StrictStr
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class MetadataServerResponse(Spec):
    name: StrictStr
    version: StrictStr
    extensions: list[StrictStr]


class LiveResponse(Spec):
    live: StrictBool


class ReadyResponse(Spec):
    ready: StrictBool


class ModelReadyResponse(Spec):
    name: StrictStr
    ready: StrictBool


class ErrorResponse(Spec):
    error: StrictStr
    detail: StrictStr  # not in the protocols: the service's one error shape, beside their key

    def model_post_init(self, context: object) -> None:
        assert self.detail == self.error


def validate(model: type[Spec], data: object) -> Spec:
    """Validate like a JSON Schema would: absent optional fields are fine, explicit nulls are not."""
    assert _no_nulls(data), f"null in {data}"
    return model.model_validate(data)


def _no_nulls(data: object) -> bool:
    if isinstance(data, dict):
        return all(v is not None and _no_nulls(v) for v in data.values())
    if isinstance(data, list):
        return all(_no_nulls(v) for v in data)
    return True


def check_tensor(tensor: Tensor) -> None:
    assert len(tensor.data) == math.prod(tensor.shape)
    kind = {"BYTES": str, "FP32": float}[tensor.datatype]
    assert all(isinstance(x, kind) for x in tensor.data)


# --- fixtures ------------------------------------------------------------------------------------

TEXTS = ["i love this , it is wonderful", "terrible service and awful food", "the meeting is at noon"]


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    settings.max_texts_per_request = 4
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def expected(client: TestClient) -> list[dict[str, object]]:
    return client.post("/predict", json={"texts": TEXTS}).json()["predictions"]


def texts_seen(client: TestClient) -> int:
    return client.app.state.served.engine.stats["texts"]  # type: ignore[attr-defined,no-any-return]


# --- Hugging Face --------------------------------------------------------------------------------


def test_hf_single_text_all_labels_best_first(client: TestClient, expected: list[dict]) -> None:
    request = {"inputs": TEXTS[0]}
    validate(HFInput, request)
    before = texts_seen(client)
    response = client.post("/models/tiny", json=request)
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body) == 1  # one list per input, as the hosted API answers (InferenceClient takes [0])
    (elements,) = body
    HF_OUTPUT.validate_python(elements)
    assert [e["score"] for e in elements] == sorted((e["score"] for e in elements), reverse=True)
    assert {e["label"]: e["score"] for e in elements} == pytest.approx(expected[0]["probabilities"])
    assert texts_seen(client) == before + 1  # through the batching engine


def test_compat_predictions_are_counted_like_predicts(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted: list[str] = []
    served = client.app.state.served  # type: ignore[attr-defined]
    monkeypatch.setattr(
        served, "on_predictions", lambda predictions: counted.extend(p.label for p in predictions)
    )
    client.post("/models/tiny", json={"inputs": TEXTS[:2]})
    tensor = {"name": "text", "shape": [1], "datatype": "BYTES", "data": [TEXTS[2]]}
    client.post("/v2/models/tiny/infer", json={"inputs": [tensor]})
    assert len(counted) == 3


@pytest.mark.parametrize("top_k", [1, 2, 10])
def test_hf_batch_with_top_k(client: TestClient, expected: list[dict], top_k: int) -> None:
    request = {"inputs": TEXTS, "parameters": {"top_k": top_k, "function_to_apply": "softmax"}}
    body = client.post("/models/tiny", json=request).json()
    assert len(body) == len(TEXTS)
    for elements, prediction in zip(body, expected, strict=True):
        HF_OUTPUT.validate_python(elements)
        assert len(elements) == min(top_k, 3)
        assert elements[0]["label"] == prediction["label"]


def test_hf_top_k_null_means_all_and_options_are_ignored(client: TestClient) -> None:
    request = {"inputs": "great", "parameters": {"top_k": None}, "options": {"wait_for_model": True}}
    (elements,) = client.post("/models/tiny", json=request).json()
    assert len(elements) == 3


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/models/tiny", {"inputs": " "}, 400, "inputs: needs a non-whitespace character"),
        ("/models/tiny", {"inputs": ["ok", ""]}, 400, "inputs.1"),
        ("/models/tiny", {"inputs": []}, 400, "inputs"),
        ("/models/tiny", {"text": "hi"}, 400, "inputs"),
        ("/models/tiny", {"inputs": "hi", "parameters": {"top_k": 0}}, 400, "top_k"),
        ("/models/tiny", {"inputs": "hi", "parameters": {"function_to_apply": "sigmoid"}}, 400, "softmax"),
        ("/models/tiny", {"inputs": ["a"] * 5}, 413, "limit is 4"),
        ("/models/other", {"inputs": "hi"}, 404, "'tiny'"),
        ("/models/tiny", {"inputs": ["ok", "\ud800"]}, 422, "inputs.1 holds an unpaired surrogate"),
    ],
)
def test_hf_errors_use_the_error_shape(
    client: TestClient, path: str, body: dict[str, object], status: int, says: str
) -> None:
    raw = json.dumps(body)  # \ud800 escaped, as a client that sends a lone surrogate does
    response = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == status
    error = validate(ErrorResponse, response.json())
    assert says in error.error  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "failure", [QueueFull("4096 texts already queued"), EngineUnavailable("the model process is restarting")]
)
def test_overload_and_a_restarting_engine_are_503_with_retry_after(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    async def fail(texts: list[str]) -> object:
        raise failure

    monkeypatch.setattr(client.app.state.served.engine, "submit", fail)  # type: ignore[attr-defined]
    v2 = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]}
    for path, body in [("/models/tiny", {"inputs": "hi"}), ("/v2/models/tiny/infer", v2)]:
        response = client.post(path, json=body)
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        validate(ErrorResponse, response.json())


# --- Open Inference Protocol ---------------------------------------------------------------------


def test_v2_server_metadata_and_health(client: TestClient) -> None:
    validate(MetadataServerResponse, client.get("/v2").json())
    assert validate(LiveResponse, client.get("/v2/health/live").json()) == LiveResponse(live=True)
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 200 and validate(ReadyResponse, ready.json()) == ReadyResponse(ready=True)
    model_ready = client.get("/v2/models/tiny/ready")
    assert model_ready.status_code == 200 and validate(ModelReadyResponse, model_ready.json())


def test_v2_not_ready_is_a_4xx(client: TestClient) -> None:
    served, client.app.state.served = client.app.state.served, None  # type: ignore[attr-defined]
    try:
        ready = client.get("/v2/health/ready")
        assert 400 <= ready.status_code < 500 and ready.json() == {"ready": False}
        assert client.get("/v2/health/live").status_code == 200
        model_ready = client.get("/v2/models/tiny/ready")
        assert model_ready.status_code == 503
        validate(ErrorResponse, model_ready.json())
    finally:
        client.app.state.served = served  # type: ignore[attr-defined]


def test_v2_model_metadata(client: TestClient) -> None:
    meta = validate(MetadataModelResponse, client.get("/v2/models/tiny").json())
    assert isinstance(meta, MetadataModelResponse) and meta.versions
    assert [(t.name, t.datatype) for t in meta.inputs] == [("text", "BYTES")]
    assert {t.name: t.shape for t in meta.outputs} == {"label": [-1], "score": [-1], "probabilities": [-1, 3]}
    versioned = client.get(f"/v2/models/tiny/versions/{meta.versions[0]}")
    assert versioned.json() == client.get("/v2/models/tiny").json()
    for path in ["/v2/models/other", "/v2/models/tiny/versions/nope"]:
        response = client.get(path)
        assert response.status_code == 404 and validate(ErrorResponse, response.json())


@pytest.mark.parametrize("shape", [[3], [3, 1]])
def test_v2_infer(client: TestClient, expected: list[dict], shape: list[int]) -> None:
    data: list[object] = list(TEXTS) if shape == [3] else [[t] for t in TEXTS]
    request = {"id": "req-1", "inputs": [{"name": "text", "shape": shape, "datatype": "BYTES", "data": data}]}
    validate(InferenceRequest, request)
    before = texts_seen(client)
    response = client.post("/v2/models/tiny/infer", json=request)
    assert response.status_code == 200, response.text
    body = validate(InferenceResponse, response.json())
    assert isinstance(body, InferenceResponse)
    assert body.id == "req-1" and body.model_name == "tiny" and body.model_version
    for tensor in body.outputs:
        check_tensor(tensor)
    outputs = {t.name: t for t in body.outputs}
    assert outputs["label"].data == [p["label"] for p in expected]
    assert outputs["score"].data == pytest.approx([p["score"] for p in expected])
    probabilities = outputs["probabilities"]
    assert probabilities.shape == [3, 3] and probabilities.parameters == {
        "labels": "negative,neutral,positive"
    }
    flat = [p["probabilities"][label] for p in expected for label in ("negative", "neutral", "positive")]  # type: ignore[index]
    assert probabilities.data == pytest.approx(flat)  # row-major [N, L]
    assert texts_seen(client) == before + 3


def test_v2_infer_selected_outputs_and_versioned_path(client: TestClient) -> None:
    version = client.get("/v2/models/tiny").json()["versions"][0]
    request = {
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["great"]}],
        "outputs": [{"name": "score"}],
    }
    response = client.post(f"/v2/models/tiny/versions/{version}/infer", json=request)
    body = validate(InferenceResponse, response.json())
    assert [t.name for t in body.outputs] == ["score"]  # type: ignore[attr-defined]
    assert body.id  # type: ignore[attr-defined]  # generated when the request has none


@pytest.mark.parametrize(
    ("tensor", "status", "says"),
    [
        ({"shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}, 400, "BYTES"),
        ({"shape": [3], "datatype": "BYTES", "data": ["a", "b"]}, 400, "holds 3 elements"),
        ({"shape": [1, 2], "datatype": "BYTES", "data": [["a", "b"]]}, 400, "[N, 1]"),
        ({"shape": [1], "datatype": "BYTES", "data": [7]}, 400, "element 0"),
        ({"shape": [1], "datatype": "BYTES", "data": [" "]}, 400, "non-whitespace"),
        ({"shape": [0], "datatype": "BYTES", "data": []}, 400, "no texts"),
        ({"shape": [5], "datatype": "BYTES", "data": ["a"] * 5}, 413, "limit is 4"),
    ],
)
def test_v2_infer_errors(client: TestClient, tensor: dict[str, object], status: int, says: str) -> None:
    request = {"inputs": [{"name": "text", **tensor}]}
    response = client.post("/v2/models/tiny/infer", json=request)
    assert response.status_code == status
    error = validate(ErrorResponse, response.json())
    assert says in error.error  # type: ignore[attr-defined]


def test_v2_unknown_output_and_model(client: TestClient) -> None:
    tensor = {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}
    bad_output = client.post("/v2/models/tiny/infer", json={"inputs": [tensor], "outputs": [{"name": "x"}]})
    assert bad_output.status_code == 400 and validate(ErrorResponse, bad_output.json())
    unknown = client.post("/v2/models/other/infer", json={"inputs": [tensor]})
    assert unknown.status_code == 404 and validate(ErrorResponse, unknown.json())
