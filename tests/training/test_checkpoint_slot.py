"""A checkpoint slot belongs to one run at a time; saving never collides with another writer;
a slot that cannot be created, or a file that is no checkpoint, is one clear error."""

from __future__ import annotations

import torch
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

import robustctl.training.checkpoint as checkpoint_module
from robustctl.cli import app
from robustctl.composition import compose
from robustctl.errors import CheckpointError
from robustctl.tracking.lifecycle import config_container
from robustctl.tracking.provenance import config_hash
from robustctl.training import checkpoint_path, checkpoint_slot, load_checkpoint, save_checkpoint

runner = CliRunner()


def slot_of(overrides: list[str]):
    raw, cfg = compose(overrides)
    return checkpoint_path(cfg, config_hash(config_container(raw)))


def test_a_second_run_of_one_config_is_refused_while_the_first_holds_the_slot(tiny, tmp_path):
    """The slot is held (as by a run training in another process): a run of the same config in
    the same work_dir is refused with one line, exit 2, before any MLflow run opens; once the
    slot is free the same command trains."""
    with checkpoint_slot(slot_of(tiny)):
        refused = runner.invoke(app, ["train", *tiny])
    assert refused.exit_code == 2, refused.output
    assert "another run of this training config" in refused.output
    assert "Traceback" not in refused.output
    assert not (tmp_path / "mlruns.db").exists()  # refused before its run opened
    trained = runner.invoke(app, ["train", *tiny])
    assert trained.exit_code == 0, trained.output
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("robustctl").experiment_id])
    assert run.info.status == "FINISHED"


def test_two_writers_of_one_checkpoint_both_succeed(tmp_path, monkeypatch):
    """A second save of the same path starts while the first is still writing (as two runs of
    one config did): with one fixed temporary name the first writer's rename found its file
    gone. Each writer now has its own temporary file; the last rename wins, whole."""
    target = tmp_path / "slot" / "last.pt"
    real_save = torch.save
    nested = []

    def save_and_interleave(obj, fh, *args, **kwargs):
        real_save(obj, fh, *args, **kwargs)
        if not nested:  # the other writer runs start to end inside the first one's write
            nested.append(1)
            save_checkpoint({"epoch": 2}, target)

    monkeypatch.setattr(checkpoint_module.torch, "save", save_and_interleave)
    save_checkpoint({"epoch": 1}, target)
    monkeypatch.undo()
    assert load_checkpoint(target)["epoch"] == 1  # the first writer renamed last, whole
    assert [p.name for p in target.parent.iterdir()] == ["last.pt"]  # no temporary file left


def test_a_file_where_the_checkpoint_folder_should_be_is_one_clear_error(tiny, tmp_path):
    (tmp_path / "checkpoints").write_text("not a folder")
    result = runner.invoke(app, ["train", *tiny])
    assert result.exit_code == 2, result.output
    assert "could not create the checkpoint folder" in result.output
    assert f"{tmp_path / 'checkpoints'} is a file where a folder should be" in result.output
    assert "NotADirectoryError" not in result.output and "disk space" not in result.output


def test_a_save_into_a_blocked_folder_names_the_file_in_the_way(tmp_path):
    (tmp_path / "blocked").write_text("x")
    target = tmp_path / "blocked" / "hash" / "last.pt"
    try:
        save_checkpoint({"epoch": 1}, target)
    except CheckpointError as exc:
        assert "no checkpoint was kept" in str(exc)
        assert f"{tmp_path / 'blocked'} is a file where a folder should be" in str(exc)
    else:
        raise AssertionError("saving under a file did not fail")


def test_files_that_are_no_checkpoint_are_called_corrupt_not_unsafe(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"garbage")
    for path, words in ((empty, "is empty (0 bytes)"), (garbage, "truncated or corrupt")):
        try:
            load_checkpoint(path)
        except CheckpointError as exc:
            assert words in str(exc) and "unsafe" not in str(exc), str(exc)
        else:
            raise AssertionError(f"{path.name} loaded")


def test_an_empty_checkpoint_through_the_cli_is_exit_2(tiny, tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    result = runner.invoke(app, ["evaluate", *tiny, f"evaluate.checkpoint={empty}"])
    assert result.exit_code == 2 and "is empty (0 bytes)" in result.output, result.output
