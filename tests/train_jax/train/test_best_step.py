"""`jaxtune export --step best`: the step the run ranked best by its checkpoint.best_metric,
recorded on disk by the trainer, chosen in a later process."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from infra.cli import main
from tests.train_jax.train.helpers import tiny_config
from tests.train_jax.train.runs import TOKENIZER
from train_jax import checkpoint as ckpt
from train_jax.checkpoint.best import best_step
from train_jax.config.run_config import CheckpointConfig
from train_jax.model.llama import init_model
from train_jax.train.checkpointing import TrainCheckpointer


def _params():
    from flax import nnx

    return nnx.to_pure_dict(nnx.state(init_model(tiny_config(), 0), nnx.Param))


def _save_run(ckpt_dir, history, cfg):
    """Save one state per (step, metrics); step s holds the params scaled by s."""
    ckpt.write_checkpoint_info(ckpt_dir, tiny_config(), assets_from=TOKENIZER)
    saver = TrainCheckpointer(ckpt_dir, cfg)
    base = _params()
    for step, metrics in history:
        state = {"step": jnp.int32(step), "trainable": jax.tree.map(lambda x, s=step: x * s, base),
                 "frozen": {}, "opt_state": {"count": jnp.int32(step)}}
        saver.save(state, {"position": step}, {"run": "test"}, metrics)
    saver.close()
    return base


def test_export_best_takes_the_step_with_the_highest_task_metric(tmp_path, capsys):
    cfg = CheckpointConfig(every=1, keep=1, keep_best=1, best_metric="val_exact_match",
                           best_mode="max", async_save=False)
    history = [(1, {"val_exact_match": 0.25, "val_loss": 3.0}),
               (2, {"val_exact_match": 0.50, "val_loss": 2.0}),
               (3, {"val_exact_match": 0.40, "val_loss": 1.0}),
               (4, {"loss": 0.9})]  # the last step, never evaluated
    base = _save_run(tmp_path / "ckpt", history, cfg)
    best = best_step(tmp_path / "ckpt")
    assert (best.step, best.metric, best.value) == (2, "val_exact_match", 0.5)
    assert [s for s, _ in best.ranked] == [2]  # step 4 kept as the latest, without the metric
    assert main(["export", "--checkpoint", str(tmp_path / "ckpt"), "--step", "best",
                 "--out", str(tmp_path / "hf")]) == 0
    assert "step 2: highest val_exact_match = 0.5" in capsys.readouterr().out
    exported = load_file(tmp_path / "hf" / "model.safetensors")
    np.testing.assert_allclose(exported["model.norm.weight"], 2 * np.asarray(base["norm"]["scale"]))


def test_lowest_wins_for_min_metrics_and_ties_go_to_the_later_step(tmp_path):
    cfg = CheckpointConfig(every=1, keep=3, keep_best=1, best_metric="val_loss",
                           best_mode="min", async_save=False)
    _save_run(tmp_path / "ckpt", [(1, {"val_loss": 2.0}), (2, {"val_loss": 1.0}),
                                  (3, {"val_loss": 1.0})], cfg)
    assert best_step(tmp_path / "ckpt").step == 3


def test_best_without_a_recorded_metric_is_a_clear_error(tmp_path, capsys):
    from train_jax.convert import names

    ckpt.write_model_checkpoint(tmp_path / "imported", names.unflatten(names.flatten(_params())),
                                tiny_config(), assets_from=TOKENIZER)
    assert main(["export", "--checkpoint", str(tmp_path / "imported"), "--step", "best",
                 "--out", str(tmp_path / "hf")]) != 0
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "no committed step records a ranking metric" in err and "choose one by number" in err


@pytest.mark.parametrize("bad", ["bestest", "-", "1.5"])
def test_a_bad_step_argument_is_refused(tmp_path, capsys, bad):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--checkpoint", str(tmp_path), "--step", bad, "--out", str(tmp_path / "o")])
    assert exit_info.value.code != 0
    assert "expected a step number, 'latest' or 'best'" in capsys.readouterr().err


def test_the_final_steps_own_evaluation_ranks_its_checkpoint(tmp_path):
    # Step 6 is evaluated inside the loop (6 % 3 == 0) and saved after it (6 % 4 != 0): the
    # final save must carry that evaluation, or the last step can never be chosen as the best
    # (a demo exported step 100 of 157 this way while step 157 scored higher).
    from tests.train_jax.train.runs import viggo_slice, write_config
    from train_jax.config.run_config import load_run_config
    from train_jax.train.loop import train

    config = write_config(tmp_path / "tiny.yaml", viggo_slice(tmp_path, 40),
                          train={"steps": 6, "batch_size": 4, "log_every": 1, "progress": False},
                          eval={"every": 3, "batches": 1},
                          checkpoint={"every": 4, "keep": 3, "keep_best": 0,
                                      "best_metric": "val_loss", "best_mode": "min"})
    train(load_run_config(config, [f"run_dir={tmp_path / 'run'}"]))
    best = best_step(tmp_path / "run" / "checkpoints")
    assert [step for step, _ in best.ranked] == [6]  # step 4 had no evaluation
    assert best.step == 6
