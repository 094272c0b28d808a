"""The vLLM rollout engine samples from the policy it was last given: after a reload its
log-probs are transformers' on an export of the same weights, with the LM head tied to the
embeddings too (vLLM's in-place reload alone left a tied head at its starting weights)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.vllm


def test_reloaded_weights_reach_a_tied_lm_head(tmp_path):
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    result = subprocess.run([sys.executable, "-m", "tests.infra.rollout.weight_push",
                             str(tmp_path), "tied"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    gaps = json.loads(result.stdout.strip().splitlines()[-1])
    assert gaps["before"] > 0.1  # the perturbation is visible before the reload
    assert gaps["after"] < 1e-4, gaps
