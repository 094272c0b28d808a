"""GRPO building blocks on the host: rewards that raise, task resolution, the rollout rows,
the resumable prompt order and sampling key, and settings that must fail loudly."""

from __future__ import annotations

import numpy as np
import pytest

from eval.tasks.records import TaskExample
from tests.train_jax.train.grpo_toy import FLAKY, TASK, grpo_config
from train_jax.config.loading import ConfigError
from train_jax.config.run_config import run_config_from_dict
from train_jax.data.config import DataConfig
from train_jax.train.grpo.loop import check_supported
from train_jax.train.grpo.prompts import RolloutState, resolve_task
from train_jax.train.grpo.rewards import check_reward_metric, score_completions
from train_jax.train.grpo.rollout import update_rows


def _example(digit: str) -> TaskExample:
    return TaskExample({"digit": digit}, digit)


def test_a_reward_that_raises_scores_zero_and_is_counted(caplog):
    texts = ["3", "7", "7 7", "5", "x"]
    examples = [_example(d) for d in ("3", "7", "7", "4", "1")]
    batch = score_completions(FLAKY, texts, examples)
    np.testing.assert_array_equal(batch.rewards, [1.0, 0.0, 0.0, 0.0, 0.0])
    assert batch.errors == 2
    assert "2 reward call(s) raised" in caplog.text and "scorer bug" in caplog.text
    # The same completions with a scorer that works: "7" was right, and no errors.
    np.testing.assert_array_equal(score_completions(TASK, texts, examples).rewards,
                                  [1.0, 1.0, 1.0, 0.0, 0.0])


def test_non_finite_rewards_count_as_errors_and_format_reward_adds():
    class NanTask(type(TASK)):
        def reward(self, prediction, example):
            return float("nan") if prediction == "1" else super().reward(prediction, example)

    batch = score_completions(NanTask("nan_task"), ["1", "2", "x"],
                              [_example("1"), _example("2"), _example("2")], format_reward=0.25)
    np.testing.assert_allclose(batch.rewards, [0.25, 1.25, 0.0])  # "1" parses: format only
    assert batch.errors == 1
    np.testing.assert_array_equal(batch.format_hits, [True, True, False])


def test_a_named_task_metric_is_the_reward_and_an_unknown_one_is_refused():
    from eval.tasks.viggo import TASK as VIGGO

    gold = TaskExample({"ref": "x"}, "inform(name[Tetris], genres[puzzle], rating[good])")
    texts = ["inform(name[Tetris], genres[puzzle], rating[good])",  # exact
             "inform(name[Tetris], genres[puzzle])",  # two of three pairs, no extra
             "request(name[Tetris])",  # one pair
             "no meaning representation here"]
    exact = score_completions(VIGGO, texts, [gold] * 4)
    f1 = score_completions(VIGGO, texts, [gold] * 4, metric="attribute_f1")
    np.testing.assert_array_equal(exact.rewards, [1.0, 0.0, 0.0, 0.0])  # the primary metric
    np.testing.assert_allclose(f1.rewards, [1.0, 0.8, 0.5, 0.0], rtol=1e-6)  # partial credit
    check_reward_metric(VIGGO, "attribute_f1")
    check_reward_metric(VIGGO, None)
    with pytest.raises(ConfigError, match=r"task 'viggo' has no metric 'f1'; its metrics are "
                                          r"\['exact_match', 'function_type', 'attribute_f1'\]"):
        check_reward_metric(VIGGO, "f1")


def test_tasks_resolve_by_name_module_path_or_data_source():
    data = DataConfig(task="jsonl", train_file="x.jsonl", prompt_field="digit",
                      completion_field="answer")
    assert resolve_task("tests.train_jax.train.grpo_toy:TASK", data) is TASK
    assert resolve_task("toy_digit", data) is TASK  # registered by the import above
    assert resolve_task(None, data).input_fields == ("digit",)  # the jsonl source's own task
    assert resolve_task("gsm8k", data).name == "gsm8k"
    with pytest.raises(ConfigError, match="cannot import"):
        resolve_task("tests.train_jax.train.grpo_toy:NOPE", data)
    with pytest.raises(ConfigError, match="not a Task"):
        resolve_task("tests.train_jax.train.grpo_toy:DIGITS", data)


def test_update_rows_train_only_the_completion_in_the_left_padded_layout():
    prompts = np.array([[0, 0, 5, 6], [7, 8, 9, 10]], np.int32)  # row 0 has 2 padding columns
    pad = np.array([2, 0], np.int32)
    tokens = np.array([[11, 2, 0], [12, 13, 14]], np.int32)  # row 0 stopped at EOS (2)
    counts = np.array([2, 3], np.int32)
    rows = update_rows(prompts, pad, tokens, counts, micro_batches=2)
    assert rows["input_ids"].shape == (2, 1, 7)
    r0 = {k: v[0, 0] for k, v in rows.items()}
    np.testing.assert_array_equal(r0["input_ids"], [0, 0, 5, 6, 11, 2, 0])
    np.testing.assert_array_equal(r0["segment_ids"], [0, 0, 1, 1, 1, 1, 0])
    np.testing.assert_array_equal(r0["positions"], [0, 0, 0, 1, 2, 3, 0])
    # Targets at columns 3 and 4 are the completion (11 and EOS): only those are trained.
    np.testing.assert_array_equal(r0["targets"][3:5], [11, 2])
    np.testing.assert_array_equal(r0["loss_mask"], [0, 0, 0, 1, 1, 0, 0])
    r1 = {k: v[1, 0] for k, v in rows.items()}
    np.testing.assert_array_equal(r1["loss_mask"], [0, 0, 0, 1, 1, 1, 0])
    np.testing.assert_array_equal(r1["positions"], np.arange(7))


def test_rollout_state_resumes_the_same_prompts_and_keys():
    import jax

    first = RolloutState(10, 4, seed=3)
    drawn = [first.next_prompts() for _ in range(2)]
    saved = first.get_state()
    after = [(first.next_prompts(), np.asarray(jax.random.key_data(first.next_key())))
             for _ in range(4)]
    resumed = RolloutState(10, 4, seed=3)
    resumed.set_state(saved)
    again = [(resumed.next_prompts(), np.asarray(jax.random.key_data(resumed.next_key())))
             for _ in range(4)]
    for (p, k), (p2, k2) in zip(after, again, strict=True):
        np.testing.assert_array_equal(p, p2)
        np.testing.assert_array_equal(k, k2)
    # An epoch is a permutation: the first 10 prompts drawn are every prompt once.
    assert sorted(np.concatenate([*drawn, after[0][0]])[:10].tolist()) == list(range(10))
    with pytest.raises(ValueError, match="prompt file changed"):
        RolloutState(11, 4, seed=3).set_state(saved)


def test_unregistered_rollout_engines_and_uneven_batches_are_refused(tmp_path):
    from train_jax.train.grpo.rollout_engines import build_rollout_engine

    # The training core builds vLLM rollouts only from the engine `jaxtune train` registers.
    with pytest.raises(ConfigError, match="objective.grpo.rollout=nope needs its engine "
                                          "registered by the caller"):
        build_rollout_engine("nope", None)
    cfg = run_config_from_dict(grpo_config(tmp_path, train={"micro_batches": 3, "batch_size": 6}))
    with pytest.raises(ConfigError, match="multiple of train.micro_batches"):
        check_supported(cfg)


def test_dynamic_sampling_keeps_informative_groups_first_in_draw_order():
    from train_jax.train.grpo.loop import _keep_groups, _Rollout
    from train_jax.train.grpo.rewards import RewardBatch

    group = 2

    def round_of(first_prompt: int, rewards: list[float]) -> _Rollout:
        r = np.asarray(rewards, np.float32)
        n = len(r)
        prompts = np.repeat(np.arange(first_prompt, first_prompt + n // group), group)
        return _Rollout(prompts, np.arange(n)[:, None] + 100 * first_prompt, np.full(n, 3),
                        RewardBatch(r, np.zeros(n, bool), 1), r - 0.5,
                        np.ptp(r.reshape(-1, group), axis=1) > 0, 1.5)

    # Round 1: prompts 0..2, only prompt 1 informative; round 2: prompts 10..12, 10 and 12.
    rounds = [round_of(0, [0, 0, 1, 0, 1, 1]), round_of(10, [1, 0, 0, 0, 0, 1])]
    batch = _keep_groups(rounds, 3, group)
    np.testing.assert_array_equal(batch.prompt_rows, [1, 1, 10, 10, 12, 12])
    np.testing.assert_array_equal(batch.rewards.rewards, [1, 0, 1, 0, 0, 1])
    np.testing.assert_array_equal(batch.advantages, batch.rewards.rewards - 0.5)
    assert batch.informative.all() and batch.rewards.errors == 2 and batch.sample_s == 3.0
    # Short of informative groups: filled with the first set-aside ones, kept in draw order.
    short = _keep_groups(rounds[:1], 3, group)
    np.testing.assert_array_equal(short.prompt_rows, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(short.informative, [False, True, False])
