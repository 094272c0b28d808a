"""Benchmark: `jaxtune export` of SmolLM2-135M vs a plain `safetensors.numpy.save_file`.

Both write the same bf16 tensors (HF names and layout) to local disk. The jaxtune side is
`export_checkpoint` (what `jaxtune export` runs: map the arrays of the orbax `params` item,
transpose kernels to the HF layout on a worker thread and write them into a preallocated
safetensors file, then config / tokenizer / generation config); the peer only writes arrays
already in memory in HF layout. Also reported: the export without preallocating the file
(save_file does not preallocate; this row shows what that part of the gain is worth), export
from a checkpoint saved with orbax defaults (compressed, as training writes them), the full
CLI in a fresh process (interpreter and JAX start-up included), and phases alone, including
orbax's own restore of the same item for reference. Target: export <= 2x the peer.

    .venv/bin/python bench/export.py [--model HF_DIR] [--repeats 3] [--plot PATH]
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_MODEL = REPO / "runs" / "models" / "smollm2-135m-instruct"


def _timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _without_preallocation(stream_module, fn) -> None:
    real = stream_module._fallocate
    stream_module._fallocate = lambda: None
    try:
        fn()
    finally:
        stream_module._fallocate = real


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                        help="HF folder (fetched with `jaxtune model fetch smollm2-135m-instruct` if absent)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG bar chart here")
    args = parser.parse_args()

    import numpy as np
    import orbax.checkpoint as ocp
    from safetensors.numpy import save_file

    from train_jax import checkpoint as ckpt
    from train_jax.convert import names, safetensors_stream
    from train_jax.convert.fetch import fetch_model
    from train_jax.convert.hf_export import (
        export_checkpoint,
        hf_tensors,
        hf_weights,
        write_safetensors,
    )
    from train_jax.convert.hf_import import from_hf

    fetch_model("smollm2-135m-instruct", args.model)
    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    try:
        cfg, params = from_hf(args.model)
        ckpt.write_model_checkpoint(work / "ckpt", params, cfg, assets_from=args.model)
        # A checkpoint as the trainer writes it: orbax defaults (zarr-compressed arrays).
        ckpt.write_checkpoint_info(work / "train_ckpt", cfg, assets_from=args.model)
        with ckpt.checkpoint_manager(work / "train_ckpt") as manager:
            manager.save(0, args=ocp.args.Composite(params=ocp.args.StandardSave(params)))
            manager.wait_until_finished()
        arrays = dict(hf_tensors(params, cfg, "bfloat16"))
        size_mb = sum(a.nbytes for a in arrays.values()) / 1e6
        flat = names.flatten(params)
        weights = hf_weights({path: a.shape for path, a in flat.items()}, cfg)
        # Orbax's own restore of the item, as export_checkpoint did it before (tree from the config).
        orbax_args = ocp.args.PyTreeRestore(restore_args=names.unflatten(
            {tuple(map(str, p)): ocp.RestoreArgs(restore_type=np.ndarray) for p in flat}))
        orbax_restorer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler())

        cli_cmd = [str(Path(sys.executable).parent / "jaxtune"), "export", "--checkpoint",
                   str(work / "ckpt"), "--out", str(work / "export_cli"), "--dtype", "bf16"]
        # Interleaved (one of each per round) so that both sides see the same machine load. A
        # gc.collect() (untimed) before every call keeps a full collection of the garbage the
        # benchmark loop itself leaves (~80 ms with JAX loaded) out of whichever call trips it.
        # Every contender writes a file that does not exist yet (outputs are removed between
        # rounds, untimed): rewriting an existing file in place costs ~0.1 s more on ext4, whose
        # auto_da_alloc starts writeback of the truncated file's pages on close. The last
        # contender shows that case for the peer.
        contenders = {
            "safetensors.numpy.save_file (peer)":
                lambda: save_file(arrays, work / "peer.safetensors", metadata={"format": "pt"}),
            "export_checkpoint (jaxtune export, in process)":
                lambda: export_checkpoint(work / "ckpt", work / "export", dtype="bf16"),
            "same, without preallocating the file":
                lambda: _without_preallocation(
                    safetensors_stream, lambda: export_checkpoint(work / "ckpt", work / "export3", dtype="bf16")),
            "same, from a compressed (trainer-default) checkpoint":
                lambda: export_checkpoint(work / "train_ckpt", work / "export2", dtype="bf16"),
            "`jaxtune export` CLI (fresh process)":
                lambda: subprocess.run(cli_cmd, check=True, capture_output=True),
            "  phase: restore_params (tensorstore, all arrays)": lambda: ckpt.restore_params(work / "ckpt"),
            "  phase: orbax restore of the same item (before)":
                lambda: orbax_restorer.restore(work / "ckpt" / "steps" / "0" / "params", args=orbax_args),
            "  phase: transposes + streamed write, from memory":
                lambda: write_safetensors(weights, flat, "bfloat16", work / "phase"),
            "  peer rewriting its file in place (not fresh)":
                lambda: save_file(arrays, work / "peer_in_place.safetensors", metadata={"format": "pt"}),
        }
        (work / "phase").mkdir()
        save_file(arrays, work / "peer_in_place.safetensors", metadata={"format": "pt"})
        outputs = [work / "peer.safetensors", work / "phase" / "model.safetensors",
                   *(work / d / "model.safetensors" for d in ("export", "export2", "export3", "export_cli"))]
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(args.repeats):
            for name, fn in contenders.items():
                for output in outputs:
                    output.unlink(missing_ok=True)
                gc.collect()
                times[name] += _timed(fn, 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = [(name, t) for name, t in times.items() if not name.startswith("  ")]
    base = statistics.median(times["safetensors.numpy.save_file (peer)"])
    print(f"SmolLM2-135M bf16, {len(arrays)} tensors, {size_mb:.0f} MB; median of {args.repeats}, interleaved")
    print(f"{'':55s} {'median s':>9s} {'min s':>7s} {'x peer':>7s}")
    for name, t in times.items():
        print(f"{name:55s} {statistics.median(t):9.3f} {min(t):7.3f} {statistics.median(t) / base:6.2f}x")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 3))
        ax.barh([r[0] for r in rows][::-1], [statistics.median(r[1]) for r in rows][::-1], color="#4a7")
        ax.set_xlabel("seconds (median)")
        ax.set_title(f"SmolLM2-135M export, {size_mb:.0f} MB bf16")
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
