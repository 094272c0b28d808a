"""The on-disk jaxtune checkpoint (`CKPT_DIR`), orbax based.

```
CKPT_DIR/jaxtune_checkpoint.json   format version, HF model config dict, LoRA spec, source
CKPT_DIR/hf_assets/                tokenizer files, generation_config.json, chat template
CKPT_DIR/steps/<step>/params       orbax CheckpointManager steps; item `params` always present
```

Typical use:
- import: `write_model_checkpoint(ckpt_dir, params, cfg, assets_from=hf_dir)`
- training: `write_checkpoint_info(ckpt_dir, cfg, assets_from=base_dir)` once, then
  `checkpoint_manager(ckpt_dir)` and `manager.save(step, args=ocp.args.Composite(params=
  ocp.args.StandardSave(params), opt_state=..., ...))`
- reading: `read_checkpoint_info(ckpt_dir)`, `restore_params(ckpt_dir, step=None)`, or
  `open_params(ckpt_dir)` to read the host arrays one at a time into buffers of one's own
"""

from train_jax.checkpoint.host_read import StoredArrays
from train_jax.checkpoint.layout import (
    ASSETS_DIR,
    FORMAT_VERSION,
    INFO_FILE,
    STEPS_DIR,
    CheckpointError,
    CheckpointInfo,
    NotACheckpointError,
    assets_dir,
    copy_hf_assets,
    is_jaxtune_checkpoint,
    read_checkpoint_info,
    steps_dir,
    write_checkpoint_info,
)
from train_jax.checkpoint.store import (
    PARAMS_ITEM,
    NoCommittedStepError,
    checkpoint_manager,
    committed_steps,
    open_params,
    resolve_step,
    restore_params,
    write_model_checkpoint,
)

__all__ = [
    "ASSETS_DIR", "FORMAT_VERSION", "INFO_FILE", "PARAMS_ITEM", "STEPS_DIR",
    "CheckpointError", "CheckpointInfo", "NoCommittedStepError", "NotACheckpointError", "StoredArrays",
    "assets_dir", "checkpoint_manager", "committed_steps", "copy_hf_assets",
    "is_jaxtune_checkpoint", "open_params", "read_checkpoint_info", "resolve_step", "restore_params",
    "steps_dir", "write_checkpoint_info", "write_model_checkpoint",
]
