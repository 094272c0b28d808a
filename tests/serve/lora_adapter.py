"""Write a PEFT-format LoRA adapter for a local HF Llama folder (peft itself is not needed).

The adapter is random but not zero, so a model served with it answers differently from its
base: that difference is what the LoRA serving tests look for.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

TARGETS = ("q_proj", "v_proj")


def build_lora_adapter(base_dir: str | Path, out_dir: str | Path, *, rank: int = 8,
                       alpha: int = 16, seed: int = 0, scale: float = 0.5) -> Path:
    """Write `adapter_config.json` and `adapter_model.safetensors` for the model in `base_dir`."""
    base = Path(base_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads((base / "config.json").read_text())
    hidden = config["hidden_size"]
    head_dim = config.get("head_dim") or hidden // config["num_attention_heads"]
    out_features = {"q_proj": config["num_attention_heads"] * head_dim,
                    "v_proj": config["num_key_value_heads"] * head_dim}
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(config["num_hidden_layers"]):
        for target in TARGETS:
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{target}"
            tensors[f"{prefix}.lora_A.weight"] = (
                rng.standard_normal((rank, hidden)) * scale).astype(np.float32)
            tensors[f"{prefix}.lora_B.weight"] = (
                rng.standard_normal((out_features[target], rank)) * scale).astype(np.float32)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    adapter_config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": alpha,
        "lora_dropout": 0.0, "target_modules": list(TARGETS), "bias": "none",
        "fan_in_fan_out": False, "modules_to_save": None, "inference_mode": True,
        "base_model_name_or_path": str(base),
    }
    (out / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))
    return out
