"""What `jaxtune verify` compares: the Flax source, the export, its dtype, and for a LoRA run the
base + PEFT adapter folders vLLM serves adapters from (written from the checkpoint when needed)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from infra.verify.server_side import LoraServing

logger = logging.getLogger(__name__)


class VerifyInputError(ValueError):
    """The checkpoint or export given cannot be verified (the message says why)."""


@dataclass(frozen=True)
class VerifyTargets:
    """Resolved inputs: `flax_source` is a checkpoint or an HF folder; `export_dir` an HF folder."""

    flax_source: Path
    step: int | None
    export_dir: Path
    dtype: str
    lora: LoraServing | None


def export_dtype(export_dir: Path) -> str:
    """The canonical weight dtype named in an HF folder's config.json (float32 when absent)."""
    from train_jax.convert.dtypes import DTYPE_ALIASES

    config = json.loads((export_dir / "config.json").read_text())
    name = str(config.get("torch_dtype") or config.get("dtype") or "float32")
    return DTYPE_ALIASES.get(name.removeprefix("torch."), "float32")


def exported_step(export_dir: Path) -> int | None:
    """The checkpoint step an export was made from (its `jaxtune.json`), None when unrecorded."""
    from train_jax.provenance import PROVENANCE_FILE

    path = export_dir / PROVENANCE_FILE
    if not path.is_file():
        return None
    step = json.loads(path.read_text()).get("step")
    return int(step) if isinstance(step, int) else None


def _check_checkpoint(path: Path) -> None:
    from train_jax import checkpoint as ckpt

    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not ckpt.is_jaxtune_checkpoint(path):
        hint = (f"; did you mean {path / 'checkpoints'}?"
                if ckpt.is_jaxtune_checkpoint(path / "checkpoints") else "")
        raise VerifyInputError(f"{path} is not a jaxtune checkpoint (no {ckpt.INFO_FILE}){hint}")


def _check_export(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"export not found: {path}")
    if not (path / "config.json").is_file():
        raise VerifyInputError(f"{path} is not an HF model folder (no config.json)")


def resolve_targets(checkpoint: Path | None, export: Path | None, work_dir: Path, *,
                    step: int | None = None, dtype: str | None = None,
                    lora_serving: bool = True) -> VerifyTargets:
    """Check the inputs; export the checkpoint into `work_dir` when no export is given, and for a
    LoRA checkpoint (with `lora_serving`) write the base and the PEFT adapter there too."""
    if checkpoint is None and export is None:
        raise VerifyInputError("give --checkpoint CKPT_DIR and/or --export HF_DIR")
    if export is not None:
        _check_export(export)
    if checkpoint is None:
        if step is not None:
            raise VerifyInputError("--step needs --checkpoint")
        return VerifyTargets(export, None, export, export_dtype(export), None)
    _check_checkpoint(checkpoint)
    from train_jax import checkpoint as ckpt
    from train_jax.convert.hf_export import export_checkpoint

    # An export of an earlier step (the best one, say) is compared with that step, not the
    # latest: comparing different weights would fail for no fault of the conversion.
    recorded = exported_step(export) if export is not None else None
    if step is not None and recorded is not None and step != recorded:
        raise VerifyInputError(f"--step {step}, but {export} was exported from step {recorded}; "
                               f"drop --step or pass --step {recorded}")
    step = ckpt.resolve_step(checkpoint, step if step is not None else recorded)
    if export is None:
        export = work_dir / "export"
        logger.info("exporting %s step %d to %s", checkpoint, step, export)
        export_checkpoint(checkpoint, export, dtype=dtype, step=step)
    dtype = export_dtype(export)
    info = ckpt.read_checkpoint_info(checkpoint)
    lora = None
    if info.lora is not None and lora_serving:
        lora = write_lora_serving(checkpoint, step, dtype, work_dir)
    return VerifyTargets(checkpoint, step, export, dtype, lora)


def write_lora_serving(checkpoint: Path, step: int, dtype: str, work_dir: Path) -> LoraServing:
    """The checkpoint's frozen base as an HF folder and its adapters as a PEFT folder."""
    from train_jax import checkpoint as ckpt
    from train_jax.convert import names
    from train_jax.convert.hf_export import to_hf, write_peft_adapter

    info = ckpt.read_checkpoint_info(checkpoint)
    params = ckpt.restore_params(checkpoint, step)
    base = {p: v for p, v in names.flatten(params).items() if p[-1] not in names.LORA_LEAVES}
    assets = ckpt.assets_dir(checkpoint)
    base_dir = to_hf(names.unflatten(base), info.to_model_config(), work_dir / "lora_base",
                     dtype=dtype, assets_from=assets if assets.is_dir() else None)
    adapter_dir = write_peft_adapter(params, info.lora, work_dir / "lora_adapter",
                                     base_model=str(base_dir), dtype=dtype)
    return LoraServing(base_dir, adapter_dir, info.lora.rank)
