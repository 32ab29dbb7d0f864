"""Static checks of the deployment files: what the Dockerfile, compose files, nginx and Kubernetes
manifests promise (GPU, probes, loopback ports, non-root) and that the helpers they call work."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def load_yaml(name: str) -> dict:
    # The compose files use `!reset`, a compose-only tag: read it as a plain value.
    loader = type("Loader", (yaml.SafeLoader,), {})
    loader.add_constructor("!reset", lambda loader, node: None)
    return yaml.load((ROOT / name).read_text(), Loader=loader)  # a SafeLoader subclass


def test_dockerfile_basics() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "USER app" in text and "HEALTHCHECK" in text and 'VOLUME ["/checkpoints"]' in text
    assert "SENTIMENT_HOST=0.0.0.0" in text
    # Dependencies are installed before the code is copied, so code edits keep the cached layers.
    assert text.index("pip install -r") < text.index("COPY . /app")
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for needed in ("!deploy/healthcheck.py", "!deploy/docker-entrypoint.sh", "!checkpoints/default/"):
        assert needed in ignore


def test_compose_reserves_gpu_publishes_loopback_and_checks_health() -> None:
    compose = load_yaml("docker-compose.yml")
    service = compose["services"]["service"]
    device = service["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert service["ports"][0].startswith("${SENTIMENT_BIND_ADDRESS:-127.0.0.1}:")
    assert "healthcheck.py" in " ".join(service["healthcheck"]["test"])
    assert service["restart"] == "unless-stopped"
    assert compose["services"]["train"]["profiles"] == ["train"]
    cpu = load_yaml("docker-compose.cpu.yml")["services"]
    assert cpu["service"]["deploy"]["resources"]["reservations"]["devices"] is None  # !reset


def test_kubernetes_deployment_probes_resources_gpu() -> None:
    deployment = yaml.safe_load((ROOT / "deploy/k8s/deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"]["memory"]
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in (ROOT / "deploy/k8s").glob("*.yaml")}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler"} <= kinds


def test_nginx_conf_retries_on_another_replica() -> None:
    conf = (ROOT / "deploy/nginx.conf").read_text()
    assert "# BEGIN servers" in conf and "# END servers" in conf  # scripts/scale-nginx-test.sh needs them
    assert "proxy_next_upstream error timeout http_502 http_503 non_idempotent;" in conf


class _Ready(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/readyz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(("status", "exit_code"), [(200, 0), (503, 1)])
def test_healthcheck_script(status: int, exit_code: int) -> None:
    handler = type("Handler", (_Ready,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {**os.environ, "SENTIMENT_PORT": str(server.server_address[1])}
        done = subprocess.run([sys.executable, str(ROOT / "deploy/healthcheck.py")], env=env, timeout=20)
        assert done.returncode == exit_code
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
def test_entrypoint_seeds_an_empty_volume_once(tmp_path: Path, tiny_checkpoint: Path) -> None:
    target = tmp_path / "volume" / "current"
    target.parent.mkdir()
    env = {
        **os.environ,
        "SENTIMENT_CHECKPOINT": str(target),
        "SENTIMENT_BUILTIN_CHECKPOINT": str(tiny_checkpoint),
    }
    script = str(ROOT / "deploy/docker-entrypoint.sh")
    subprocess.run([script, "true"], env=env, check=True, timeout=20)
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in tiny_checkpoint.iterdir())
    (target / "marker").write_text("kept")
    subprocess.run([script, "true"], env=env, check=True, timeout=20)
    assert (target / "marker").read_text() == "kept"  # an existing checkpoint is never overwritten
