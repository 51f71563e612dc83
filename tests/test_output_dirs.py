"""Output directories: sepo never destroys what the user did not ask to replace, a failed
command leaves nothing behind, and a directory is written by one process at a time."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sepo.cli import app
from sepo.errors import SepoError
from sepo.rundir import (
    LOCK_FILE,
    OUTPUT_MARKER,
    RunLock,
    check_output_dir,
    describe_os_error,
    describing_os_errors,
    output_made_by,
    replace_dir_atomically,
)
from sepo.sft.data import generate_sft_data

runner = CliRunner()


def invoke(*args: str | Path) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def refused(result: Any, *words: str) -> None:
    """Exit 2, one line naming what is wrong, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    text = " ".join(result.output.split())
    for word in words:
        assert word in text, (word, result.output)


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` (hidden ones included) with the digest of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("outdirs") / "data"
    generate_sft_data("ipd", out, episodes_per_opponent=1, seed=0)
    return out


def sft_args(data: Path, out: Path, model: str | Path = "org/not-loaded") -> list[str | Path]:
    # An HF id that is never loaded: every case here is refused before the model is.
    return ["sft", "ipd", "--model", model, "--data", data, "--out", out, "--max-steps", "1",
            "--batch-size", "4", "--device", "cpu"]


# ------------------------------------------------------------------ sepo sft
def test_sft_refuses_to_write_over_its_inputs_files_and_foreign_dirs(
        data: Path, tmp_path: Path) -> None:
    before = snapshot(data)
    refused(invoke(*sft_args(data, data)), str(data), "is the input")
    refused(invoke(*sft_args(data, data, model=data)), "is the input")
    refused(invoke(*sft_args(data, data / "ckpt")), "lies inside the input")
    refused(invoke(*sft_args(data, data.parent)), "contains the input")
    # The model directory is an input too.
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    refused(invoke(*sft_args(data, model, model=model)), "is the input")

    plain = tmp_path / "notes.txt"
    plain.write_text("mine")
    refused(invoke(*sft_args(data, plain)), "is a file", "--out")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("mine")
    refused(invoke(*sft_args(data, foreign)), "not empty", "--overwrite")

    # --overwrite never reaches an input.
    refused(invoke(*sft_args(data, data), "--overwrite"), "is the input")
    refused(invoke(*sft_args(data, data.parent), "--overwrite"), "contains the input")
    refused(invoke(*sft_args(data, plain), "--overwrite"), "is a file")

    assert snapshot(data) == before
    assert plain.read_text() == "mine" and (foreign / "thesis.tex").read_text() == "mine"
    assert (model / "config.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign", "model", "notes.txt"]
    assert sorted(p.name for p in data.parent.iterdir()) == ["data"]


def test_sft_failure_leaves_nothing_it_created(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "ckpt"
    # kuhn on IPD data fails after the lock is taken, before any model is loaded.
    result = invoke("sft", "kuhn", "--model", "org/not-loaded", "--data", data, "--out", out)
    refused(result, "ipd")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.usefixtures("one_thread")
def test_sft_overwrite_replaces_a_foreign_dir_and_an_earlier_checkpoint(
        data: Path, tiny_lm_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "old.txt").write_text("replace me")
    result = invoke(*sft_args(data, out, model=tiny_lm_path), "--overwrite", "--json")
    assert result.exit_code == 0, result.output
    assert not (out / "old.txt").exists()
    assert (out / "sepo_sft.json").is_file() and output_made_by(out) == "sft"
    # Nothing beside it: no staging, set-aside or lock files.
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    # Its own earlier output is replaced only on request too.
    refused(invoke(*sft_args(data, out, model=tiny_lm_path)), "earlier `sepo sft` output",
            "--overwrite")
    assert (out / "sepo_sft.json").is_file()


@pytest.fixture
def one_thread() -> Any:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------ sepo sft-data
def test_sft_data_refuses_foreign_dirs_and_replaces_only_on_request(tmp_path: Path) -> None:
    args = ["sft-data", "ipd", "--episodes-per-opponent", "1", "--json", "--out"]
    plain = tmp_path / "file"
    plain.write_text("mine")
    refused(invoke(*args, plain), "is a file")
    refused(invoke(*args, plain, "--overwrite"), "is a file")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    refused(invoke(*args, foreign), "not an SFT dataset directory", "--overwrite")
    assert (foreign / "keep.txt").read_text() == "mine" and plain.read_text() == "mine"

    out = tmp_path / "data"
    assert invoke(*args, out).exit_code == 0
    first = snapshot(out)
    assert OUTPUT_MARKER in first and output_made_by(out) == "sft-data"
    refused(invoke(*args, out), "earlier `sepo sft-data` output", "--overwrite")
    assert invoke(*args, out, "--overwrite").exit_code == 0
    assert snapshot(out) == first  # same arguments, same bytes
    assert invoke(*args, foreign, "--overwrite").exit_code == 0
    assert not (foreign / "keep.txt").exists() and (foreign / "card.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "file", "foreign"]


def test_full_disk_is_one_line_naming_the_path_and_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(self: Path, *args: Any, **kwargs: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "write_text", full)
    out = tmp_path / "new" / "data"
    result = invoke("sft-data", "ipd", "--episodes-per-opponent", "1", "--out", out)
    refused(result, "no space left", str(out))
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ sepo report
def test_report_on_a_missing_or_non_run_directory_creates_nothing(tmp_path: Path) -> None:
    typo = tmp_path / "runz"
    refused(invoke("report", typo, "--no-plots"), "no results.json", str(typo))
    assert not typo.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(invoke("report", empty, "--no-plots"), "no results.json")
    assert list(empty.iterdir()) == []
    refused(invoke("report", typo, empty, "--out", tmp_path / "both"), "no results.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


# ------------------------------------------------------------------ sepo run
class _Stop(Exception):
    """Stops a pipeline at its first stage (the rest is test_pipeline's)."""


def test_failed_run_leaves_no_config_and_the_corrected_command_runs(
        tiny_lm_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sepo.pipeline as pipeline
    import sepo.pipeline.stages as stages

    out = tmp_path / "run"
    refused(invoke("run", "kuhn", "--model", "no-such-model", "--out", out), "no-such-model")
    assert not out.exists()

    seen: list[dict[str, Any]] = []

    def first_stage(config: Any, game: str, seed: int, log: Any) -> Path:
        seen.append(json.loads((config.out / pipeline.CONFIG_FILE).read_text()))
        assert (config.out / LOCK_FILE).exists()
        raise _Stop

    monkeypatch.setattr(stages, "_stage_sft_data", first_stage)
    result = invoke("run", "kuhn", "--model", tiny_lm_path, "--out", out, "--steps", "2")
    assert isinstance(result.exception, _Stop), result.output
    assert seen[0]["model"] == str(tiny_lm_path) and seen[0]["steps"] == 2
    # That stage saved nothing either: the record goes, so a third command with another
    # config is not refused as another experiment.
    assert not out.exists()
    result = invoke("run", "kuhn", "--model", tiny_lm_path, "--out", out, "--steps", "3")
    assert isinstance(result.exception, _Stop) and seen[1]["steps"] == 3


def test_run_refuses_another_config_or_foreign_files_unless_overwrite(
        tiny_lm_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sepo.pipeline as pipeline
    import sepo.pipeline.stages as stages

    out = tmp_path / "run"
    out.mkdir()
    (out / "mine.txt").write_text("mine")
    args = ["run", "kuhn", "--model", str(tiny_lm_path), "--out", str(out), "--steps"]
    refused(invoke(*args, "2"), "not empty", "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]

    (out / "mine.txt").unlink()
    old = pipeline.RunConfig(games=["kuhn"], out=out, model=str(tiny_lm_path), steps=2)
    (out / pipeline.CONFIG_FILE).write_text(old.model_dump_json())
    (out / "kuhn").mkdir()
    (out / "kuhn" / "work.txt").write_text("earlier work")
    refused(invoke(*args, "3"), "steps: 2 → 3", "--overwrite")
    assert (out / "kuhn" / "work.txt").exists()

    def first_stage(config: Any, game: str, seed: int, log: Any) -> Path:
        raise _Stop

    monkeypatch.setattr(stages, "_stage_sft_data", first_stage)
    result = invoke(*args, "3", "--overwrite")
    assert isinstance(result.exception, _Stop), result.output
    # The earlier run is gone; this one saved nothing, so nothing is left.
    assert not (out / "kuhn").exists() and list(out.iterdir()) == []


# ------------------------------------------------------------------ RunLock
def test_second_holder_is_refused_naming_the_first(tmp_path: Path) -> None:
    run_dir = tmp_path / "deep" / "run"
    with RunLock(run_dir, command="train"):
        owner = json.loads((run_dir / LOCK_FILE).read_text())
        assert owner["pid"] == os.getpid() and owner["command"] == "train"
        # Another open file description in this process conflicts like another process.
        with pytest.raises(SepoError, match=rf"`sepo train` \(pid {os.getpid()} "), \
                RunLock(run_dir, command="run"):
            pass
        assert (run_dir / LOCK_FILE).exists()  # the refused one took nothing away
    # Released: the lock file and the directories the lock created (still empty) are gone.
    assert not (tmp_path / "deep").exists()
    with RunLock(run_dir, command="run"):
        pass


def _holder(directory: Path) -> subprocess.Popen[str]:
    code = textwrap.dedent(f"""
        import sys, time
        from sepo.rundir import RunLock
        with RunLock({str(directory)!r}, command="train"):
            print("locked", flush=True)
            time.sleep(120)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "locked"
    return child


def test_lock_held_by_another_process_then_taken_over_when_it_dies(tmp_path: Path) -> None:
    child = _holder(tmp_path)
    try:
        with pytest.raises(SepoError, match=rf"in use by `sepo train` \(pid {child.pid} "), \
                RunLock(tmp_path, command="train"):
            pass
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    # Killed: its lock file is still there, its flock is not.
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == child.pid
    with RunLock(tmp_path, command="run"):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_FILE).exists()


def test_output_lock_lives_beside_the_directory_it_replaces(tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    with RunLock.for_output(out, "sft"):
        assert (tmp_path / ".ckpt.sepo.lock").exists() and not out.exists()
        with pytest.raises(SepoError, match=f"{out} is in use"), RunLock.for_output(out, "sft"):
            pass
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ rules and errors
def test_check_output_dir_rules(tmp_path: Path) -> None:
    inp = tmp_path / "runs" / "a"
    inp.mkdir(parents=True)
    assert check_output_dir(tmp_path / "new", inputs=[inp], made_by="sft") == "new"
    with pytest.raises(SepoError, match="contains the input"):
        check_output_dir(tmp_path / "runs", inputs=[inp], overwrite=True, made_by="report")
    with pytest.raises(SepoError, match="lies inside the input"):
        check_output_dir(inp / "x", inputs=[inp, "org/hf-id"], made_by="sft")
    (tmp_path / "e").mkdir()
    assert check_output_dir(tmp_path / "e", made_by="sft") == "empty"
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "run_config.json").write_text("{}")  # a run from before the marker
    assert check_output_dir(run_dir, made_by="run") == "earlier"
    with pytest.raises(SepoError, match="`sepo run` output"):
        check_output_dir(run_dir, made_by="sft")
    assert check_output_dir(run_dir, made_by="sft", overwrite=True) == "replace"
    with pytest.raises(SepoError, match="refusing to replace"):
        check_output_dir(Path.cwd(), made_by="sft", overwrite=True)


def test_replace_dir_atomically_puts_the_old_one_back_on_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, staging = tmp_path / "out", tmp_path / ".out.tmp-1"
    out.mkdir()
    (out / "old").write_text("old")
    staging.mkdir()
    (staging / "new").write_text("new")
    real_replace = os.replace

    def failing(src: Any, dst: Any) -> None:
        if Path(src) == staging:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(SepoError, match="read-only file system"):
        replace_dir_atomically(staging, out)
    assert (out / "old").read_text() == "old"
    monkeypatch.setattr(os, "replace", real_replace)
    replace_dir_atomically(staging, out)
    assert [p.name for p in out.iterdir()] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_out_that_is_a_link_replaces_its_target(tmp_path: Path) -> None:
    target = tmp_path / "disk" / "data"
    target.mkdir(parents=True)
    (target / "old").write_text("old")
    link = tmp_path / "data"
    link.symlink_to(target)
    generate_sft_data("ipd", link, episodes_per_opponent=1, overwrite=True)
    assert link.is_symlink() and (target / "card.json").is_file()
    assert not (target / "old").exists()
    assert sorted(p.name for p in (tmp_path / "disk").iterdir()) == ["data"]


@pytest.mark.parametrize(("code", "words"), [
    (errno.ENOSPC, ("no space left", "free some disk space")),
    (errno.EROFS, ("read-only file system", "writable disk")),
    (errno.EACCES, ("permission denied",)),
    (errno.ENAMETOOLONG, ("too long",)),
    (errno.ENOTDIR, ("not a directory",)),
    (errno.EEXIST, ("already exists",)),
])
def test_describe_os_error_names_the_path_and_the_cause(code: int, words: tuple[str, ...],
                                                        tmp_path: Path) -> None:
    path = tmp_path / "out"
    err = describe_os_error(OSError(code, os.strerror(code), str(path / "model.safetensors")),
                            path)
    message = str(err)
    assert isinstance(err, SepoError) and "\n" not in message
    assert str(path) in message and "model.safetensors" in message
    for word in words:
        assert word in message


def test_disk_full_in_torch_or_safetensors_words(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SepoError, match="no space left"), describing_os_errors(tmp_path):
        raise RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                           'message: "No space left on device" })')

    class Usage:
        free = 0

    monkeypatch.setattr("shutil.disk_usage", lambda path: Usage())
    with pytest.raises(SepoError, match=f"no space left on the device of {tmp_path}"), \
            describing_os_errors(tmp_path):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0"
                           " PytorchStreamWriter failed writing file data/0: file write failed")
    with pytest.raises(ValueError, match="unrelated"), describing_os_errors(tmp_path):
        raise ValueError("unrelated")
