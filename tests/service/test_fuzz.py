"""Schemathesis fuzzes every operation of the app's own OpenAPI schema, in-process: no 5xx, and every
response matches the schema (status code documented, content type, body).

Bounded for the unit suite (FUZZ_EXAMPLES per operation, derandomised); for a longer run:
``SENTIMENT_FUZZ_EXAMPLES=500 .venv/bin/python -m pytest -s tests/service/test_fuzz.py``.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import BaseSchema, GenerationMode
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from service.app import create_app
from service.settings import Settings

FUZZ_EXAMPLES = int(os.environ.get("SENTIMENT_FUZZ_EXAMPLES", "10"))
KEY = "fuzz-key"
CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
CASES: Counter[str] = Counter()


@pytest.fixture(scope="module")
def api_schema(tiny_checkpoint: Path) -> BaseSchema:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, checkpoint=tiny_checkpoint, device="cpu", torch_threads=1, api_keys=KEY
    )
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(settings))


def _fuzz(operation: APIOperation, mode: GenerationMode) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis_settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        CASES[f"{mode.value} {case.method} {case.path}"] += 1
        case.call_and_validate(headers={"X-API-Key": KEY}, checks=CHECKS)

    run()


@pytest.mark.slow
def test_api_answers_every_generated_request_within_its_schema(api_schema: BaseSchema) -> None:
    failures = []
    for result in api_schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # our own schema is always valid
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz(operation, mode)
            except Unsatisfiable:
                continue  # no invalid input exists for it (a GET without parameters)
            except Exception as exc:  # collect every operation's failure, not just the first
                failures.append(f"{mode.value} {operation.label}: {exc}")
    cases, operations = sum(CASES.values()), len({k.split(" ", 1)[1] for k in CASES})
    print(f"\nschemathesis: {cases} cases over {operations} operations, {len(failures)} failures")
    assert not failures, "\n\n".join(failures)
