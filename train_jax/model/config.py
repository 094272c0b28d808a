"""Model configuration built from (and back to) a Hugging Face `config.json`."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from train_jax.model.kernels.names import KERNEL_BACKENDS, KernelBackend

logger = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES: tuple[str, ...] = ("llama", "qwen2", "mistral")
DTypeName = Literal["float32", "bfloat16", "float16"]
SUPPORTED_ROPE_TYPES: tuple[str, ...] = ("default", "llama3", "linear")
LORA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# What each decoder block keeps for the backward pass: everything (none), only its input (full),
# also every matmul without batch dimensions (save_dots; only plain-jnp products are seen, not the
# xla_cpu custom-VJP ones), or also the q/k/v/o projections (save_qkvo). Applied per block by
# `llama.py` through `nnx.remat` with a `jax.checkpoint_policies` policy.
RematPolicy = Literal["none", "full", "save_dots", "save_qkvo"]
REMAT_POLICIES: tuple[str, ...] = get_args(RematPolicy)


class UnsupportedModelError(ValueError):
    """The HF config describes a model jaxtune cannot represent."""


@dataclass(frozen=True)
class LoraSpec:
    """LoRA adapters on the named projections: W x + (alpha / rank) * B A dropout(x)."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q_proj", "v_proj")

    def __post_init__(self) -> None:
        if self.rank <= 0:
            raise ValueError(f"lora rank must be > 0, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora dropout must be in [0, 1), got {self.dropout}")
        unknown = sorted(set(self.targets) - set(LORA_TARGETS))
        if unknown or not self.targets:
            raise ValueError(f"lora targets {unknown or '[]'} invalid; choose from {list(LORA_TARGETS)}")

    @property
    def scale(self) -> float:
        """The LoRA output scale alpha / rank."""
        return self.alpha / self.rank


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a Llama-family decoder plus run-time numerics options.

    Architecture fields come from the HF config (`from_hf_config`); `dtype` (compute),
    `param_dtype`, `kernels` (a resolved backend, `kernels.backend.resolve_backend`), `remat`
    and `lora` are jaxtune options. The original HF dict is kept so that an export writes back
    the same `config.json`.
    """

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: tuple[tuple[str, Any], ...] = ()
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    torch_dtype: str = "float32"
    # jaxtune options (not part of the HF architecture)
    dtype: DTypeName = "float32"
    param_dtype: DTypeName = "float32"
    # xla_cpu by default: a caller that does not choose (conversion, eval, benchmarks, tests)
    # runs the ops it ran before backends existed, on any platform, with no dependence on the
    # host at construction. Training passes `resolve_backend(model.kernels)` (default auto).
    kernels: KernelBackend = "xla_cpu"
    remat: RematPolicy = "none"
    # Run the decoder blocks as one `lax.scan` over their weights stacked per step (see
    # `llama.scan_blocks`) instead of an unrolled Python loop.
    scan_layers: bool = False
    lora: LoraSpec | None = None
    hf_config: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if self.kernels not in KERNEL_BACKENDS:
            raise ValueError(f"kernels {self.kernels!r} is not a backend; choose from "
                             f"{list(KERNEL_BACKENDS)} (resolve 'auto' with resolve_backend)")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat {self.remat!r} is not a policy; choose from {list(REMAT_POLICIES)}")
        if self.scan_layers and self.lora is not None and self.lora.dropout > 0:
            # A scanned block is rebuilt from its stacked state: dropout's RNG would not advance.
            raise ValueError("scan_layers does not support LoRA dropout > 0 "
                             f"(got {self.lora.dropout})")
        if self.num_attention_heads % self.num_key_value_heads:
            raise UnsupportedModelError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        rope_type = self.rope_scaling_dict.get("rope_type", "default")
        if rope_type not in SUPPORTED_ROPE_TYPES:
            raise UnsupportedModelError(
                f"rope scaling type {rope_type!r} is not supported; supported: {list(SUPPORTED_ROPE_TYPES)}"
            )

    @property
    def rope_scaling_dict(self) -> dict[str, Any]:
        """RoPE scaling parameters as a dict (empty for plain RoPE)."""
        return dict(self.rope_scaling)

    @classmethod
    def from_hf_config(cls, hf: Mapping[str, Any], **options: Any) -> ModelConfig:
        """Build from a HF `config.json` dict (transformers 4.x or 5.x layout)."""
        model_type = hf.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise UnsupportedModelError(
                f"unsupported model_type {model_type!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
        missing = [key for key in required if key not in hf]
        if missing:
            raise UnsupportedModelError(f"config.json is missing {missing}")
        heads = int(hf["num_attention_heads"])
        # transformers 5 moved rope settings into `rope_parameters`; 4.x had rope_theta + rope_scaling.
        rope = dict(hf.get("rope_parameters") or {})
        rope_theta = float(rope.pop("rope_theta", hf.get("rope_theta", 10000.0)))
        if not rope and hf.get("rope_scaling"):
            rope = dict(hf["rope_scaling"])
        if "type" in rope and "rope_type" not in rope:
            rope["rope_type"] = rope.pop("type")
        if rope.get("rope_type") == "default":
            rope = {}
        if model_type == "mistral" and hf.get("sliding_window"):
            logger.info("mistral sliding_window=%s ignored: jaxtune uses full attention", hf["sliding_window"])
        eos = hf.get("eos_token_id")
        return cls(
            model_type=model_type,
            vocab_size=int(hf["vocab_size"]),
            hidden_size=int(hf["hidden_size"]),
            intermediate_size=int(hf["intermediate_size"]),
            num_hidden_layers=int(hf["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=int(hf.get("num_key_value_heads") or heads),
            head_dim=int(hf.get("head_dim") or hf["hidden_size"] // heads),
            max_position_embeddings=int(hf.get("max_position_embeddings", 2048)),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=rope_theta,
            rope_scaling=tuple(sorted(rope.items())),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            # Qwen2 always has q/k/v biases; its config has no attention_bias key.
            attention_bias=bool(hf.get("attention_bias", model_type == "qwen2")),
            mlp_bias=bool(hf.get("mlp_bias", False)),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
            torch_dtype=str(hf.get("torch_dtype") or hf.get("dtype") or "float32"),
            hf_config=dict(hf),
            **options,
        )

    def to_hf_config(self, torch_dtype: str | None = None) -> dict[str, Any]:
        """The HF `config.json` dict; the original one when this config came from HF."""
        if self.hf_config:
            out = dict(self.hf_config)
        else:
            out = {
                "architectures": [_ARCHITECTURES[self.model_type]],
                "model_type": self.model_type,
                "vocab_size": self.vocab_size,
                "hidden_size": self.hidden_size,
                "intermediate_size": self.intermediate_size,
                "num_hidden_layers": self.num_hidden_layers,
                "num_attention_heads": self.num_attention_heads,
                "num_key_value_heads": self.num_key_value_heads,
                "head_dim": self.head_dim,
                "max_position_embeddings": self.max_position_embeddings,
                "rms_norm_eps": self.rms_norm_eps,
                "rope_theta": self.rope_theta,
                "rope_scaling": self.rope_scaling_dict or None,
                "tie_word_embeddings": self.tie_word_embeddings,
                "attention_bias": self.attention_bias,
                "mlp_bias": self.mlp_bias,
                "hidden_act": "silu",
                "bos_token_id": self.bos_token_id,
                "eos_token_id": list(self.eos_token_id) if isinstance(self.eos_token_id, tuple)
                else self.eos_token_id,
            }
        if torch_dtype is not None:
            # transformers 5 writes `dtype`; 4.x reads `torch_dtype`. Keep whichever the source had.
            key = "dtype" if "dtype" in out and "torch_dtype" not in out else "torch_dtype"
            out[key] = torch_dtype
        elif "torch_dtype" not in out and "dtype" not in out:
            out["torch_dtype"] = self.torch_dtype
        return out

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with `changes` applied (keeps the original HF dict)."""
        return dataclasses.replace(self, **changes)


_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}
