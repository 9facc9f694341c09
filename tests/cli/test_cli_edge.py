"""The CLI edge under bad input: every user error exits 2 with one ``error: ...`` line
(bad options, decompression-bomb images, a busy or impossible port)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from siamkit.cli import app
from siamkit.data.images import load_image
from siamkit.errors import DataError

from ..conftest import make_image_folder
from ..service.test_service import build_model, png_header_only

runner = CliRunner()
FAST = ["--epochs", "1", "--batch-size", "4", "--m-per-class", "2", "--no-progress", "--val-fraction", "0"]


def run(*args: object):  # type: ignore[no-untyped-def]
    return runner.invoke(app, [str(a) for a in args])


def assert_user_error(result, *words: str) -> None:  # type: ignore[no-untyped-def]
    err = result.stderr
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output and "unexpected" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("edge") / "model")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    assert run("keys", "add", "--name", "a", "--keys", path).exit_code == 0
    return path


def test_bomb_header_is_a_data_error(tmp_path: Path, model: Path) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(20000, 20000))  # 400M pixels: past Pillow's own 179M limit
    with pytest.raises(DataError, match="bomb.png"):
        load_image(bomb)
    good = tmp_path / "good.png"
    from PIL import Image

    Image.new("L", (28, 28)).save(good)
    assert_user_error(run("compare", model, good, bomb), "bomb.png", "pixels")
    assert_user_error(run("gallery", "enroll", "x", bomb, "--gallery", tmp_path / "g.db", "--model", model), "bomb.png")
    data = make_image_folder(tmp_path / "data", classes=2, per_class=2)
    (data / "class0" / "bomb.png").write_bytes(bomb.read_bytes())
    assert_user_error(run("train", "--data", data, "--out", tmp_path / "o", *FAST), "bomb.png")


def test_bad_train_options(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "data", classes=2, per_class=2)
    assert_user_error(run("train", "--data", data, "--out", tmp_path / "o", "--encoder", "bogus", *FAST), "bogus", "conv4")
    assert_user_error(run("train", "--data", data, "--out", tmp_path / "o", "--distance", "nope", *FAST), "nope")
    (tmp_path / "afile").write_text("x")
    assert_user_error(run("train", "--data", data, "--out", tmp_path / "afile", *FAST), "afile", "file")


@pytest.mark.parametrize(
    "option, word",
    [
        (["--max-request-mb", "-1"], "--max-request-mb"), (["--max-request-mb", "nan"], "--max-request-mb"),
        (["--max-pixels", "0"], "--max-pixels"), (["--max-pixels", "999999999999"], "max_pixels"),
        (["--port", "70000"], "--port"), (["--max-batch", "0"], "--max-batch"), (["--timeout-keep-alive", "0"], "keep-alive"),
        (["--limit-concurrency", "0"], "--limit-concurrency"), (["--rate-per-key", "-1"], "--rate-per-key"),
        (["--rate-burst", "0"], "--rate-burst"), (["--log-level", "loud"], "--log-level"),
    ],
)
def test_bad_serve_options(model: Path, keys: Path, option: list[str], word: str) -> None:
    assert_user_error(run("serve", "--model", model, "--keys", keys, *option), word)


def test_serve_on_a_busy_port(model: Path, keys: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert_user_error(run("serve", "--model", model, "--keys", keys, "--port", port), f"127.0.0.1:{port}")


def test_serve_help_shows_the_uvicorn_limits() -> None:
    out = run("serve", "--help").output
    assert "--timeout-keep-alive" in out and "--limit-concurrency" in out


@pytest.mark.parametrize("meta, word", [('{"a":' * 300 + "1" + "}" * 300, "deeper"), ("[" * 100_000, "nests"), ('{"a":"\\ud800"}', "surrogate")])
def test_gallery_enroll_refuses_bad_metadata(tmp_path: Path, model: Path, meta: str, word: str) -> None:
    from PIL import Image

    Image.new("L", (28, 28)).save(tmp_path / "i.png")
    g = tmp_path / "g.db"
    assert_user_error(run("gallery", "enroll", "x", tmp_path / "i.png", "--gallery", g, "--model", model, "--metadata", meta), word)
    if g.exists():  # nothing stored: the gallery (if created) lists no identity
        import json

        r = run("gallery", "list", "--gallery", g, "--model", model, "--json")
        assert r.exit_code == 0 and json.loads(r.stdout)["identities"] == [], r.output
