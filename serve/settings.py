"""Server settings: one frozen dataclass built by the CLI (or a test) and read by the app."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

API_KEY_ENV = "JAXTUNE_API_KEY"

Dtype = Literal["auto", "bfloat16", "float16", "float32"]
DTYPES: tuple[str, ...] = get_args(Dtype)

# The names a model or adapter may be served under (also what /v1/load_lora_adapter accepts).
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$"
_NAME_RE = re.compile(MODEL_NAME_PATTERN)


class ServeConfigError(ValueError):
    """The serve settings are inconsistent; the message says which option to change."""


@dataclass(frozen=True)
class ModelSource:
    """A full HF model folder served under `name` (a base model or a merged export)."""

    name: str
    path: Path


@dataclass(frozen=True)
class LoraSource:
    """A PEFT-format LoRA adapter folder served as model `name` on top of base model `base`."""

    name: str
    path: Path
    base: str


@dataclass(frozen=True)
class ServeSettings:
    """Everything the server needs; validated on construction.

    `models[0]` is the primary model; LoRA adapters attach to the base they name.
    `kv_cache_gib` and `memory_fraction` bound the memory of each vLLM engine (on CPU
    `memory_fraction` is vLLM's `gpu_memory_utilization`, a fraction of RAM); when both are
    None on CPU, `serve.kv_cache` sizes the KV cache from the memory available.
    Every field but `models`, `loras` and `api_key` is a `jaxtune serve` flag generated from
    the field (`serve.settings_flags`): its default and help text are written here only.
    """

    models: tuple[ModelSource, ...]
    loras: tuple[LoraSource, ...] = ()
    host: str = field(default="127.0.0.1", metadata={"help": "bind address"})
    port: int = field(default=8000, metadata={"help": "TCP port"})
    api_key: str | None = field(default=None, repr=False)
    max_in_flight: int = field(
        default=256, metadata={"help": "generation requests served at once; more get 429"})
    max_n: int = field(default=8, metadata={"help": "largest 'n' (choices per request) accepted"})
    max_model_len: int | None = field(
        default=None, metadata={"help": "context length: prompt + output tokens",
                                "default_text": "the model's"})
    max_num_seqs: int | None = field(
        default=None, metadata={"help": "sequences vLLM batches at once",
                                "default_text": "vLLM's"})
    dtype: Dtype = field(
        default="auto", metadata={"help": "weight/activation dtype; auto: the checkpoint's"})
    kv_cache_gib: float | None = field(
        default=None, metadata={"help": "KV cache size per model in GiB",
                                "default_text": "on CPU from the memory available, see "
                                                "docs/SERVING.md; on GPU from --memory-fraction"})
    memory_fraction: float | None = field(
        default=None, metadata={
            "help": "vLLM gpu_memory_utilization: the share of GPU memory (on CPU: of all RAM) "
                    "vLLM may take; on CPU, giving it makes vLLM size the KV cache from it",
            "default_text": "vLLM's 0.9 on GPU; unused on CPU"})
    tensor_parallel_size: int = field(
        default=1, metadata={"help": "GPUs each model is split over (vLLM tensor parallelism)"})
    enforce_eager: bool = field(
        default=False,
        metadata={"help": "skip torch.compile / CUDA graphs (faster start, slower decode)"})
    enable_lora: bool = field(
        default=False, metadata={"help": "let clients load LoRA adapters at run time "
                                         "(POST /v1/load_lora_adapter) on --model, also when "
                                         "no --lora is given; implied by --lora"})
    max_lora_rank: int = field(default=16, metadata={"help": "largest LoRA rank accepted"})
    max_loras: int = field(
        default=4, metadata={"help": "LoRA adapters a base model's engine batches at once"})
    tool_call_parser: str | None = field(
        default=None, metadata={
            "help": "vLLM's tool-call parser for the models' own tool-call syntax, e.g. hermes "
                    "(as vllm serve --enable-auto-tool-choice --tool-call-parser NAME): enables "
                    "tool_choice 'auto'",
            "default_text": "none; tool_choice 'auto' is then a 400"})
    log_prompts: bool = field(
        default=False, metadata={"help": "include prompt text in the per-request log line"})
    drain_timeout_s: float = field(
        default=30.0, metadata={"help": "seconds to let in-flight requests finish on shutdown "
                                        "before aborting them", "flag": "--drain-timeout"})

    def __post_init__(self) -> None:
        if not self.models:
            raise ServeConfigError("at least one model is required (--model DIR)")
        names = self.model_names()
        for name in names:
            if not _NAME_RE.match(name):
                raise ServeConfigError(
                    f"invalid model name {name!r}: use letters, digits and . _ : / -")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ServeConfigError(f"model names must be unique; repeated: {', '.join(duplicates)}")
        bases = {m.name for m in self.models}
        for lora in self.loras:
            if lora.base not in bases:
                raise ServeConfigError(
                    f"LoRA {lora.name!r} names base {lora.base!r}, which is not served "
                    f"(served: {', '.join(sorted(bases))})")
        if self.dtype not in DTYPES:
            raise ServeConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not 0 < self.port < 65536:
            raise ServeConfigError(f"port must be in 1..65535, got {self.port}")
        if self.max_in_flight < 1:
            raise ServeConfigError(f"max_in_flight must be >= 1, got {self.max_in_flight}")
        if self.max_n < 1:
            raise ServeConfigError(f"max_n must be >= 1, got {self.max_n}")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ServeConfigError(f"max_model_len must be >= 2, got {self.max_model_len}")
        if self.tensor_parallel_size < 1:
            raise ServeConfigError(
                f"tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}")
        if self.max_num_seqs is not None and self.max_num_seqs < 1:
            raise ServeConfigError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.kv_cache_gib is not None and self.kv_cache_gib <= 0:
            raise ServeConfigError(f"kv_cache_gib must be > 0, got {self.kv_cache_gib}")
        if self.memory_fraction is not None and not 0 < self.memory_fraction <= 1:
            raise ServeConfigError(f"memory_fraction must be in (0, 1], got {self.memory_fraction}")
        if self.drain_timeout_s < 0:
            raise ServeConfigError(f"drain_timeout_s must be >= 0, got {self.drain_timeout_s}")
        if self.tool_call_parser is not None and not self.tool_call_parser.strip():
            raise ServeConfigError("tool_call_parser must not be empty")
        if self.api_key is not None and not self.api_key.strip():
            raise ServeConfigError("api_key must not be empty")

    def model_names(self) -> list[str]:
        """Every name a request's `model` may take: full models, then adapters."""
        return [m.name for m in self.models] + [lora.name for lora in self.loras]

    @property
    def runtime_lora_base(self) -> str | None:
        """The base that adapters loaded at run time attach to (the primary model, as in vLLM),
        or None when its engine is started without LoRA support (no --enable-lora, no
        --lora)."""
        primary = self.primary.name
        with_lora = self.enable_lora or any(lora.base == primary for lora in self.loras)
        return primary if with_lora else None

    @property
    def primary(self) -> ModelSource:
        """The first model: the default base for adapters and the name shown in logs."""
        return self.models[0]


def resolve_api_key(explicit: str | None, environ: dict[str, str] | None = None) -> str | None:
    """The API key from the flag, else from the `JAXTUNE_API_KEY` environment variable."""
    if explicit:
        return explicit
    value = (environ if environ is not None else os.environ).get(API_KEY_ENV, "")
    return value or None


def check_model_dir(path: Path) -> Path:
    """Fail early with a clear message unless `path` looks like an HF model folder."""
    if not path.is_dir():
        raise ServeConfigError(f"model folder not found: {path}")
    if not (path / "config.json").is_file():
        raise ServeConfigError(f"{path} is not an HF model folder (no config.json)")
    return path


def check_lora_dir(path: Path) -> Path:
    """Fail early unless `path` holds a PEFT adapter (adapter_config.json + weights)."""
    if not path.is_dir():
        raise ServeConfigError(f"LoRA adapter folder not found: {path}")
    if not (path / "adapter_config.json").is_file():
        raise ServeConfigError(f"{path} is not a PEFT adapter folder (no adapter_config.json)")
    if not any((path / f).is_file() for f in ("adapter_model.safetensors", "adapter_model.bin")):
        raise ServeConfigError(f"{path} has no adapter_model.safetensors")
    return path
