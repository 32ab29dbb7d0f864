"""``python -m service``: flags, their precedence, and one line with exit code 2 for each start-up problem."""

from __future__ import annotations

import logging
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from service import __main__ as cli
from service.settings import get_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No SENTIMENT_* from the machine, no .env, and the settings cache cleared around each test."""
    saved = dict(os.environ)  # ``load_settings`` exports the flags it parses
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level  # ``main`` sets up logging
    for key in list(os.environ):
        if key.startswith("SENTIMENT_"):
            del os.environ[key]
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield
    os.environ.clear()
    os.environ.update(saved)
    root.handlers[:], root.level = handlers, level
    get_settings.cache_clear()


def test_flags_override_the_environment_which_overrides_dot_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_checkpoint: Path
) -> None:
    (tmp_path / ".env").write_text(
        "SENTIMENT_PORT=7001\nSENTIMENT_MODEL_NAME=from-dotenv\nSENTIMENT_WORKERS=3\n"
    )
    monkeypatch.setenv("SENTIMENT_PORT", "7002")
    monkeypatch.setenv("SENTIMENT_MODEL_NAME", "from-env")
    settings = cli.load_settings(["--checkpoint", str(tiny_checkpoint), "--model-name", "from-flag"])
    assert settings.model_name == "from-flag"  # flag over environment
    assert settings.port == 7002  # environment over .env
    assert settings.workers == 3  # .env over the default
    assert settings.checkpoint == tiny_checkpoint


def test_unknown_arguments_are_refused_with_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.load_settings(["--prot", "9000"])
    assert stopped.value.code == 2
    assert "unrecognized arguments: --prot" in capsys.readouterr().err


def test_help_names_each_flag_its_default_and_its_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.load_settings(["--help"])
    assert stopped.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for text in ("--checkpoint", "--port", "default: 8000; SENTIMENT_PORT", "--workers", "--log-level"):
        assert text in out


def test_misspelt_variables_are_warned_about_with_the_likely_name() -> None:
    warnings = cli.unknown_names({"SENTIMENT_PROT": "1", "SENTIMENT_PORT": "1", "SENTIMENT_DATA_DIR": "x"})
    assert warnings == [
        "warning: SENTIMENT_PROT is not a setting and is ignored; did you mean SENTIMENT_PORT?"
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--checkpoint", "missing"],
            "SENTIMENT_CHECKPOINT (--checkpoint): checkpoint directory missing does not exist",
        ),
        (["--port", "99999"], "SENTIMENT_PORT (--port): Input should be less than or equal to 65535"),
        (["--device", "gpu"], "SENTIMENT_DEVICE=gpu is not a device: use auto, cpu, cuda or cuda:N"),
    ],
)
def test_each_start_up_problem_is_one_line_and_exit_code_2(
    argv: list[str],
    message: str,
    tiny_checkpoint: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    if "--checkpoint" not in argv:
        argv = [*argv, "--checkpoint", str(tiny_checkpoint)]
    assert cli.main(argv) == 2
    said = capsys.readouterr().err + caplog.text
    assert message in said
    assert "Traceback" not in said


def test_a_value_outside_a_flags_choices_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["--log-level", "loud"])
    assert stopped.value.code == 2
    assert "argument --log-level: invalid choice: 'loud'" in capsys.readouterr().err


def test_a_cuda_device_without_cuda_and_a_taken_port_are_refused_before_serving(
    tiny_checkpoint: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = cli.load_settings(["--checkpoint", str(tiny_checkpoint), "--device", "cuda:0"])
    problem = cli.preflight(settings)
    if not torch.cuda.is_available():
        assert (
            problem
            == "SENTIMENT_DEVICE=cuda:0: device 'cuda:0' requested but CUDA is not available; use auto or cpu"
        )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = cli.load_settings(
            ["--checkpoint", str(tiny_checkpoint), "--port", str(port), "--device", "cpu"]
        )
        assert (
            cli.preflight(settings)
            == f"127.0.0.1:{port} cannot be bound (Address already in use): choose another --port"
        )


def test_a_corrupt_checkpoint_is_named_in_one_line(tiny_checkpoint: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = str(free.getsockname()[1])
    settings = cli.load_settings(["--checkpoint", str(broken), "--device", "cpu", "--port", port])
    problem = cli.preflight(settings)
    assert problem is not None and "model.safetensors" in problem and "\n" not in problem
