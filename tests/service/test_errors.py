"""JSON bodies are UTF-8 without a byte order mark (RFC 8259) on every route that takes one."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.errors import check_encoding
from service.settings import Settings

V2 = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]}
ROUTES = [
    ("/predict", {"texts": ["i love it"]}),
    ("/explain", {"texts": ["i love it"]}),
    ("/models/tiny", {"inputs": "i love it"}),
    ("/v2/models/tiny/infer", V2),
]
JSON = {"content-type": "application/json"}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def _encodings(body: object) -> list[tuple[str, bytes, str]]:
    text = json.dumps(body)
    return [
        ("utf-8 with a BOM", b"\xef\xbb\xbf" + text.encode(), "starts with a UTF-8 byte order mark"),
        ("utf-16 (with its BOM)", text.encode("utf-16"), "UTF-16/32 LE byte order mark"),
        ("utf-16-be with a BOM", b"\xfe\xff" + text.encode("utf-16-be"), "UTF-16 BE byte order mark"),
        ("utf-16-le, no BOM", text.encode("utf-16-le"), "looks like UTF-16 or UTF-32"),
        ("utf-32-be, no BOM", text.encode("utf-32-be"), "looks like UTF-16 or UTF-32"),
        ("utf-32 (with its BOM)", text.encode("utf-32"), "UTF-16/32 LE byte order mark"),
    ]


@pytest.mark.parametrize(("path", "body"), ROUTES)
def test_a_body_not_in_utf8_or_with_a_bom_is_refused_with_400(
    client: TestClient, path: str, body: object
) -> None:
    assert client.post(path, json=body).status_code == 200  # the same body in UTF-8 is fine
    for name, content, says in _encodings(body):
        r = client.post(path, content=content, headers=JSON)
        assert r.status_code == 400, (path, name, r.text)
        detail = r.json()["detail"]
        assert says in detail and "send the JSON body as UTF-8 without a byte order mark" in detail, name


def test_the_encoding_check_looks_at_the_first_bytes_only() -> None:
    check_encoding(b'{"texts": ["\xef\xbb\xbf in the middle is text"]}')
    check_encoding(b"")
    check_encoding(b"{}")
