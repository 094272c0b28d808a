"""Tiny random transformers models of each supported family, saved as HF folders."""

from __future__ import annotations

from pathlib import Path

BASE = {
    "vocab_size": 128, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 256,
    "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
}

FAMILIES: dict[str, dict] = {
    "llama2": {"model_type": "llama"},
    "llama3_rope_scaling": {"model_type": "llama", "num_key_value_heads": 2, "rope_theta": 500000.0,
                            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                             "high_freq_factor": 4.0,
                                             "original_max_position_embeddings": 32}},
    "smollm2_like": {"model_type": "llama", "num_key_value_heads": 2, "tie_word_embeddings": True,
                     "rope_theta": 100000.0},
    "qwen2_bias": {"model_type": "qwen2", "num_key_value_heads": 2, "rope_theta": 1000000.0},
    "mistral": {"model_type": "mistral", "num_key_value_heads": 2, "sliding_window": 4096, "head_dim": 16},
    "gqa_head_dim_32": {"model_type": "llama", "num_key_value_heads": 1, "head_dim": 32},
}


def build_family_model(name: str, out_dir: Path, *, dtype: str = "float32", seed: int = 0) -> Path:
    """Save a random model of family `name` with O(1) weights (biases and norms random too)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = {**BASE, **FAMILIES[name]}
    model_type = spec.pop("model_type")
    config = AutoConfig.for_model(model_type, **spec)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for pname, param in model.named_parameters():
            # Large enough that logits are O(1): a 1e-4 tolerance then means something.
            noise = torch.randn_like(param) * (0.1 if "norm" in pname else 0.15)
            param.copy_(1.0 + noise if "norm" in pname else noise)
    model.to(getattr(torch, dtype)).save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def torch_logits(model_dir: Path, input_ids):
    """fp32 logits of transformers' PyTorch model for `input_ids` (a (B, T) int array)."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(input_ids))).logits.numpy()
