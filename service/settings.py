"""Service settings, read from ``SENTIMENT_*`` environment variables and validated at start-up."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from model.checkpoint import DEFAULT_CHECKPOINT


class Settings(BaseSettings):
    """Every setting has a default; set ``SENTIMENT_<NAME>`` (or put it in ``.env``) to change it."""

    model_config = SettingsConfigDict(env_prefix="SENTIMENT_", env_file=".env", extra="ignore")

    checkpoint: Path = Field(DEFAULT_CHECKPOINT, description="checkpoint directory to serve")
    model_name: str = Field(
        "sentiment",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="the name clients address the model by (responses, /models/NAME, /v2/models/NAME); "
        "it stays the same whatever checkpoint is served or reloaded",
    )
    host: str = Field("127.0.0.1", description="address to bind; 0.0.0.0 inside a container")
    port: int = Field(8000, ge=1, le=65535)
    device: str = Field("auto", description="auto (CUDA when available), cpu, cuda or cuda:N")
    torch_threads: int | None = Field(
        None,
        ge=1,
        description="intra-op CPU threads per worker (default: cores - 1, shared by workers, at most 4)",
    )
    workers: int = Field(
        1, ge=1, le=64, description="uvicorn worker processes, each with its own model and batcher"
    )
    quantize: bool = Field(
        False, description="int8 dynamic quantisation of the LSTM and linear layers (CPU only)"
    )
    torchscript: bool = Field(
        True,
        description="run the model as one TorchScript call, which holds the GIL only at its start and end "
        "(false: eager PyTorch)",
    )
    gil_switch_ms: float = Field(
        0.1, gt=0, le=100, description="Python's GIL switch interval (its default is 5 ms)"
    )
    batching: bool = Field(
        True, description="batch concurrent requests together; false = one forward per request"
    )
    model_process: bool = Field(
        True,
        description="with batching, run the model in a child process that shares no GIL with the event "
        "loop (false: in an inference thread of the server process)",
    )
    liveness_unavailable_s: float = Field(
        120.0,
        gt=0,
        description="/healthz fails once the model process has been down this long (restarts keep "
        "being tried), so an orchestrator replaces a pod that does not heal",
    )
    max_batch_size: int = Field(64, ge=1, le=4096, description="most texts in one forward pass")
    max_wait_ms: float = Field(
        0.0, ge=0, le=1000, description="extra wait for a batch to fill (0: never wait)"
    )
    max_queue_texts: int = Field(4096, ge=1, description="texts waiting before requests get 503")
    request_timeout_s: float = Field(30.0, gt=0, description="per-request deadline; past it, 504")
    max_texts_per_request: int = Field(256, ge=1, le=100_000)
    max_text_chars: int = Field(
        20_000,
        ge=1,
        le=1_000_000,
        description="most characters in one text; past it, 413. A text longer than the model's length is "
        "read whole, sentence by sentence",
    )
    max_sentences_per_request: int = Field(
        2_048,
        ge=1,
        description="most sentences (and windows of very long ones) the model reads for one request, "
        "with sentences on or for long texts; past it, 413. Keep it at or below max_queue_texts",
    )
    max_body_bytes: int = Field(
        2 * 1024 * 1024,
        ge=1024,
        description="largest request body in bytes, checked before parsing; past it, 413",
    )
    api_keys: SecretStr | None = Field(
        None, description="comma-separated API keys; when any key is set, requests need one"
    )
    api_keys_file: Path | None = Field(None, description="file with one API key per line (# comments)")
    header_timeout_s: float = Field(
        10.0, gt=0, description="a request's head (request line and headers) must arrive within this"
    )
    body_timeout_s: float = Field(30.0, gt=0, description="a request's body must arrive within this")
    keep_alive_s: float = Field(5.0, gt=0, description="an idle keep-alive connection is closed after this")
    max_header_bytes: int = Field(
        32 * 1024, ge=1024, description="largest request head (request line and headers); past it, 431"
    )
    max_connections: int = Field(
        2048, ge=1, description="concurrent connections (and requests) per worker; past it, 503"
    )
    shutdown_grace_s: float = Field(
        30.0, gt=0, description="on SIGTERM, how long accepted requests get to finish"
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        [],
        description="comma-separated origins a browser app may call the API from (e.g. "
        "https://app.example.com; * for any); empty: no CORS headers",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = Field("text", description="json: one JSON object per line")
    access_log: bool = Field(True, description="log one line per request (method, path, status, time)")
    opentelemetry: bool = Field(
        False,
        description="FastAPI's native OpenTelemetry spans and metrics, sent to the globally configured "
        "providers (off: not even looked up per request)",
    )

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_exists(cls, value: Path) -> Path:
        if not value.is_dir():
            raise ValueError(f"checkpoint directory {value} does not exist")
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        return [o.strip() for o in value.split(",") if o.strip()] if isinstance(value, str) else value

    @field_validator("api_keys_file")
    @classmethod
    def _keys_file_readable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"API keys file {value} does not exist")
        return value


@lru_cache
def get_settings() -> Settings:
    return Settings()
