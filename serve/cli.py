"""`jaxtune serve`: run the OpenAI-compatible server on one or more HF model folders."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from serve.settings import (
    API_KEY_ENV,
    DTYPES,
    LoraSource,
    ModelSource,
    ServeConfigError,
    ServeSettings,
    check_lora_dir,
    check_model_dir,
    resolve_api_key,
)

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `jaxtune serve` (registered by the `infra.cli` dispatcher)."""
    parser.add_argument("--model", required=True, type=Path, metavar="HF_DIR",
                        help="HF model folder to serve (a base model or a merged export)")
    parser.add_argument("--name", help="name clients use in 'model' (default: folder name)")
    parser.add_argument("--extra-model", action="append", default=[], metavar="NAME=DIR",
                        help="serve another full model folder (e.g. another merged export) "
                             "under NAME; repeatable")
    parser.add_argument("--lora", action="append", default=[], metavar="NAME=DIR",
                        help="serve a PEFT LoRA adapter on top of --model under NAME; "
                             "repeatable")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--api-key", help=f"require 'Authorization: Bearer KEY' on /v1/* "
                                          f"(default: ${API_KEY_ENV} if set, else no auth)")
    parser.add_argument("--max-in-flight", type=int, default=256,
                        help="generation requests served at once; more get 429 (default 256)")
    parser.add_argument("--max-n", type=int, default=8, help="largest 'n' accepted (default 8)")
    parser.add_argument("--max-model-len", type=int,
                        help="context length (default: the model's)")
    parser.add_argument("--max-num-seqs", type=int,
                        help="sequences vLLM batches at once (default: vLLM's)")
    parser.add_argument("--dtype", choices=DTYPES, default="auto",
                        help="weight/activation dtype (default: the checkpoint's)")
    parser.add_argument("--kv-cache-gib", type=float,
                        help="KV cache size per model in GiB (default: from --memory-fraction)")
    parser.add_argument("--memory-fraction", type=float, default=0.9,
                        help="vLLM gpu_memory_utilization; on CPU a fraction of RAM "
                             "(default 0.9)")
    parser.add_argument("--enforce-eager", action="store_true",
                        help="skip torch.compile / CUDA graphs (faster start, slower decode)")
    parser.add_argument("--max-lora-rank", type=int, default=16,
                        help="largest LoRA rank accepted (default 16)")
    parser.add_argument("--drain-timeout", type=float, default=30.0,
                        help="seconds to let in-flight requests finish on shutdown before "
                             "aborting them (default 30)")
    parser.add_argument("--log-prompts", action="store_true",
                        help="include prompt text in the per-request log line")


def _pairs(values: list[str], flag: str) -> list[tuple[str, Path]]:
    out = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ServeConfigError(f"{flag} expects NAME=DIR, got {value!r}")
        out.append((name, Path(path)))
    return out


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    """Validated `ServeSettings` from parsed flags (folders are checked to exist)."""
    main_dir = check_model_dir(args.model)
    main_name = args.name or main_dir.resolve().name
    models = [ModelSource(main_name, main_dir)]
    models += [ModelSource(name, check_model_dir(path))
               for name, path in _pairs(args.extra_model, "--extra-model")]
    loras = [LoraSource(name, check_lora_dir(path), base=main_name)
             for name, path in _pairs(args.lora, "--lora")]
    return ServeSettings(
        models=tuple(models), loras=tuple(loras), host=args.host, port=args.port,
        api_key=resolve_api_key(args.api_key), max_in_flight=args.max_in_flight,
        max_n=args.max_n, max_model_len=args.max_model_len, max_num_seqs=args.max_num_seqs,
        dtype=args.dtype, kv_cache_gib=args.kv_cache_gib,
        memory_fraction=args.memory_fraction, enforce_eager=args.enforce_eager,
        max_lora_rank=args.max_lora_rank, log_prompts=args.log_prompts,
        drain_timeout_s=args.drain_timeout)


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted (SIGINT/SIGTERM drain, then stop the engine)."""
    import uvicorn

    from serve.app import create_app

    settings = settings_from_args(args)
    logger.info("jaxtune serve on http://%s:%d (models: %s; adapters: %s; auth: %s)",
                settings.host, settings.port, ", ".join(m.name for m in settings.models),
                ", ".join(lo.name for lo in settings.loras) or "none",
                "api key" if settings.api_key else "off")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                access_log=False, log_level="info",
                timeout_graceful_shutdown=max(int(settings.drain_timeout_s), 1))
    return 0
