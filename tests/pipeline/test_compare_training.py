"""``rmat compare`` over two real ``rmat train`` runs of unequal length in one store."""

from __future__ import annotations

import os

import pytest

from tests.pipeline.compare_helpers import history, png_size, report_numbers
from tests.pipeline.conftest import rmat, run_train

SHORT, LONG, EVERY = 8, 12, 4


@pytest.fixture(scope="module")
def trained(shards, tmp_path_factory) -> dict:
    """A mean-pool run of 12 steps and an attention-pool run of 8, both tracked in one embedded store."""
    folder = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{folder}/mlflow.db"
    for name, steps, pool in (("long", LONG, "mean"), ("short", SHORT, "attn")):
        out = run_train(str(folder / f"run-{name}"), shards, f"steps={steps}", f"model.pool={pool}",
                        f"eval.every={EVERY}", f"tracking.run_name={name}", nproc=1, env={"MLFLOW_TRACKING_URI": uri})
        assert out.returncode == 0, out.stderr[-3000:]
    return {"uri": uri, "report": folder / "report"}


@pytest.fixture(scope="module")
def compared(trained) -> tuple[dict, str]:
    code, out = rmat("compare", "--experiment", "rmat", "--tracking-uri", trained["uri"],
                     "--out", str(trained["report"]))
    assert code == 0, out
    return report_numbers(trained["report"]), out


def test_the_diff_names_exactly_the_keys_the_two_trainings_were_given_differently(compared):
    numbers, _ = compared
    assert numbers["differing_params"] == ["model.pool", "run_dir", "steps", "tracking.run_name"]


def test_each_run_bears_the_name_its_training_was_given(compared):
    numbers, _ = compared
    assert [r["name"] for r in numbers["runs"]] == ["long", "short"]


def test_the_val_losses_and_the_budget_are_the_points_training_logged(trained, compared):
    from mlflow.tracking import MlflowClient

    numbers, _ = compared
    client = MlflowClient(trained["uri"])
    long_run, short_run = numbers["runs"]
    assert (long_run["steps"], short_run["steps"]) == (LONG, SHORT)
    for run in (long_run, short_run):
        val = history(client, run["run_id"], "val/loss")
        assert [s for s, _ in val] == list(range(0, run["steps"] + 1, EVERY))
        assert run["val_final"]["loss"] == val[-1][1] and run["val_best"]["loss"] == min(v for _, v in val)
    short_tokens = history(client, short_run["run_id"], "train/tokens")
    assert numbers["budget"] == {"train_tokens": short_tokens[-1][1], "val_tokens": short_tokens[-1][1]}
    # Same data in the same order: the long run had seen as many tokens at the short run's last step.
    assert dict(history(client, long_run["run_id"], "train/tokens"))[SHORT] == short_tokens[-1][1]
    assert long_run["at_budget"]["val/loss"] == dict(history(client, long_run["run_id"], "val/loss"))[SHORT]


def test_real_runs_hold_one_point_per_step_per_metric_and_plot(trained, compared):
    numbers, out = compared
    assert "every run holds exactly one point per step per metric" in out, out
    assert all(run["position_loss"] for run in numbers["runs"])
    for name in ("loss_vs_tokens.png", "position_loss.png"):
        assert os.path.getsize(trained["report"] / name) > 10_000 and png_size(trained["report"] / name)[0] > 0
