"""Hot reload: validate, then swap atomically; a bad checkpoint is rejected, the old model keeps serving."""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from model import save_checkpoint
from service.app import create_app
from service.engine import EngineUnavailable
from service.runners import ProcessRunner
from service.settings import Settings
from tests.conftest import tiny_checkpoint_object
from tests.service.live_server import live_server

KEY = "admin-key-for-tests"
ADMIN = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def other_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny checkpoint: same shape, other weights, so another version."""
    return save_checkpoint(tiny_checkpoint_object(seed=1), tmp_path_factory.mktemp("other") / "other")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    keyed = Settings(**{**settings.model_dump(), "api_keys": KEY, "_env_file": None})  # type: ignore[arg-type]
    with TestClient(create_app(keyed)) as c:
        yield c


def _version(client: TestClient) -> str:
    return str(client.get("/v1/model", headers=ADMIN).json()["version"])


def _corrupt_copy(checkpoint: Path, where: Path) -> Path:
    bad = where / "bad"
    shutil.copytree(checkpoint, bad)
    (bad / "tokenizer.json").write_text("{not json")
    return bad


def test_reload_swaps_in_a_new_checkpoint(client: TestClient, other_checkpoint: Path) -> None:
    old = _version(client)
    r = client.post("/admin/reload", json={"checkpoint": str(other_checkpoint)}, headers=ADMIN)
    assert r.status_code == 200, r.text
    new = r.json()["model"]["version"]
    assert new != old and r.json()["previous"]["version"] == old
    # The name clients address the model by stays; the version says which weights answered.
    assert r.json()["model"]["name"] == "tiny" and r.json()["checkpoint"] == str(other_checkpoint)
    assert _version(client) == new
    predict = client.post("/predict", json={"texts": ["i love it"]}, headers=ADMIN).json()
    assert predict["model"] == {"name": "tiny", "version": new}
    assert client.post("/models/tiny", json={"inputs": "i love it"}, headers=ADMIN).status_code == 200
    assert f'sentiment_model_info{{name="tiny",version="{new}"}} 1.0' in client.get("/metrics").text
    again = client.post("/admin/reload", headers=ADMIN)  # no body: re-read the active checkpoint
    assert again.status_code == 200 and again.json()["model"]["version"] == new


@pytest.mark.parametrize("problem", ["corrupt", "missing", "null byte"])
def test_a_bad_checkpoint_is_rejected_and_the_old_model_keeps_serving(
    client: TestClient, tiny_checkpoint: Path, tmp_path: Path, problem: str
) -> None:
    old = _version(client)
    path = {
        "corrupt": str(_corrupt_copy(tiny_checkpoint, tmp_path)),
        "missing": str(tmp_path / "nope"),
        "null byte": "bad\x00path",
    }[problem]
    r = client.post("/admin/reload", json={"checkpoint": path}, headers=ADMIN)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "old model keeps serving" in detail
    if problem == "corrupt":
        assert f"{tmp_path / 'bad' / 'tokenizer.json'} is truncated or altered" in detail
    if problem == "missing":
        assert f"checkpoint directory {tmp_path / 'nope'} does not exist" in detail
    assert _version(client) == old
    assert client.post("/predict", json={"texts": ["i love it"]}, headers=ADMIN).status_code == 200
    assert 'sentiment_model_reloads_total{outcome="rejected"} 1.0' in client.get("/metrics").text


def _wait_for_version(url: str, changed_from: str, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        version = str(httpx.get(f"{url}/v1/model", timeout=5).json()["version"])
        if version != changed_from:
            return version
        time.sleep(0.05)
    return changed_from


@pytest.mark.slow
def test_sighup_reloads_the_checkpoint_from_disk(tiny_checkpoint: Path, tmp_path: Path) -> None:
    served = tmp_path / "served"
    shutil.copytree(tiny_checkpoint, served)
    with live_server(served, tmp_path) as server:
        old = httpx.get(f"{server.url}/v1/model", timeout=5).json()["version"]
        save_checkpoint(tiny_checkpoint_object(seed=2), served)  # a retrain replaces it atomically
        server.signal(signal.SIGHUP)
        new = _wait_for_version(server.url, old)
        (served / "model.safetensors").write_bytes(b"garbage")  # now break it: SIGHUP must not take it
        server.signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while "SIGHUP reload rejected" not in server.log and time.monotonic() < deadline:
            time.sleep(0.05)
        after = httpx.get(f"{server.url}/v1/model", timeout=5).json()["version"]
        predict = httpx.post(f"{server.url}/predict", json={"texts": ["i love it"]}, timeout=5)
    assert new != old
    assert "SIGHUP reload rejected" in server.log and "model.safetensors" in server.log
    assert after == new and predict.status_code == 200


def test_a_model_process_that_will_not_start_on_the_new_checkpoint_is_a_rejected_reload(
    settings: Settings, other_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keyed = settings.model_copy(update={"api_keys": SecretStr(KEY), "model_process": True})
    with TestClient(create_app(keyed)) as client:
        old = _version(client)

        async def refuse(settings: Settings, path: Path) -> None:
            raise EngineUnavailable("the model process failed to start: out of memory")

        monkeypatch.setattr(ProcessRunner, "start", refuse)
        r = client.post("/admin/reload", json={"checkpoint": str(other_checkpoint)}, headers=ADMIN)
        assert r.status_code == 422, r.text
        assert "failed to start: out of memory" in r.json()["detail"]
        assert "old model keeps serving" in r.json()["detail"]
        assert _version(client) == old
        assert client.post("/predict", json={"texts": ["i love it"] * 8}, headers=ADMIN).status_code == 200
