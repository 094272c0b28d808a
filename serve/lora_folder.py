"""The checks POST /v1/load_lora_adapter makes of a client's `lora_path` before vLLM sees it:
a folder on the server's disk holding a PEFT LoRA adapter of a rank the server accepts.

Each failure is a 400 naming `lora_path`. Whether the adapter fits the base model (its module
names and tensor shapes) is vLLM's own check, made when the adapter is loaded (`add_lora`).
"""

from __future__ import annotations

import json
from pathlib import Path

from serve.errors import InvalidRequestError

WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


def _invalid(message: str) -> InvalidRequestError:
    return InvalidRequestError(f"'lora_path': {message}", param="lora_path",
                               code="invalid_lora_adapter")


def check_adapter_folder(lora_path: str, *, max_rank: int) -> Path:
    """The absolute path of the adapter folder `lora_path`, or a 400 saying what is wrong with
    it (relative paths are relative to the server's working directory; nothing is downloaded)."""
    try:
        path = Path(lora_path).expanduser().resolve()
        is_dir = path.is_dir()
    except (OSError, ValueError, RuntimeError) as exc:  # NUL bytes, an unknown ~user, loops
        raise _invalid(f"{lora_path!r} is not a usable path ({exc})") from exc
    if not is_dir:
        raise _invalid(f"no folder {str(path)!r} on the server (give the path of a PEFT "
                       "adapter folder on the server's disk)")
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        raise _invalid(f"{str(path)!r} is not a PEFT adapter folder (no adapter_config.json)")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _invalid(f"{config_file} is not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise _invalid(f"{config_file} is not a JSON object")
    peft_type = config.get("peft_type", "LORA")
    if peft_type != "LORA":
        raise _invalid(f"{str(path)!r} holds a {peft_type} adapter; only LORA adapters can be "
                       "served")
    rank = config.get("r")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise _invalid(f"{config_file} has no positive integer rank 'r' (got {rank!r})")
    if rank > max_rank:
        raise _invalid(f"the adapter's rank r={rank} is above the largest this server accepts, "
                       f"{max_rank} (restart it with --max-lora-rank {rank} or more)")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise _invalid(f"{str(path)!r} has no adapter weights (adapter_model.safetensors)")
    return path
