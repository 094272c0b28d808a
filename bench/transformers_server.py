"""The peer for bench/serve_overhead.py: a plain transformers `generate` server.

What a team writes first without an inference engine: FastAPI + `model.generate` with a
`TextIteratorStreamer` for SSE, one generation at a time (a lock; `generate` is not meant to
be called concurrently on one model), no batching across requests. It speaks just enough of
`POST /v1/completions` (streaming with usage, `max_tokens`, `temperature`, `ignore_eos`) for
`vllm bench serve` to load it like the other two servers.

    python bench/transformers_server.py --model DIR --name bench --port 8002
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
import uuid

import torch
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer


class CompletionBody(BaseModel):
    model: str
    prompt: str
    max_tokens: int = 16
    temperature: float = 1.0
    stream: bool = False
    ignore_eos: bool = False


def build_app(model_dir: str, name: str, dtype: str) -> FastAPI:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype))
    model.eval()
    lock = threading.Lock()
    app = FastAPI()

    def generate(body: CompletionBody, streamer: TextIteratorStreamer | None) -> dict:
        ids = tokenizer(body.prompt, return_tensors="pt")
        kwargs = {"max_new_tokens": body.max_tokens, "streamer": streamer,
                  "pad_token_id": tokenizer.pad_token_id or tokenizer.eos_token_id}
        if body.ignore_eos:
            kwargs["min_new_tokens"] = body.max_tokens
        if body.temperature > 0:
            kwargs.update(do_sample=True, temperature=body.temperature)
        else:
            kwargs.update(do_sample=False)
        with lock, torch.inference_mode():
            out = model.generate(**ids, **kwargs)
        prompt_len = ids["input_ids"].shape[1]
        return {"prompt_tokens": prompt_len, "completion_tokens": out.shape[1] - prompt_len,
                "text": tokenizer.decode(out[0, prompt_len:], skip_special_tokens=True)}

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.post("/v1/completions")
    async def completions(body: CompletionBody):
        rid = f"cmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if not body.stream:
            result = await asyncio.to_thread(generate, body, None)
            usage = {"prompt_tokens": result["prompt_tokens"],
                     "completion_tokens": result["completion_tokens"]}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            return JSONResponse({"id": rid, "object": "text_completion", "created": created,
                                 "model": name, "usage": usage, "choices": [
                                     {"index": 0, "text": result["text"],
                                      "finish_reason": "length"}]})
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True,
                                        timeout=600)
        task = asyncio.create_task(asyncio.to_thread(generate, body, streamer))

        async def events():
            head = {"id": rid, "object": "text_completion", "created": created, "model": name}
            iterator = iter(streamer)
            while True:
                piece = await asyncio.to_thread(next, iterator, None)
                if piece is None:
                    break
                if piece:
                    chunk = {**head, "choices": [{"index": 0, "text": piece,
                                                  "finish_reason": None}]}
                    yield f"data: {json.dumps(chunk)}\n\n"
            result = await task
            usage = {"prompt_tokens": result["prompt_tokens"],
                     "completion_tokens": result["completion_tokens"],
                     "total_tokens": result["prompt_tokens"] + result["completion_tokens"]}
            yield f"data: {json.dumps({**head, 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--name", default="bench")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    args = parser.parse_args()
    uvicorn.run(build_app(args.model, args.name, args.dtype), host="127.0.0.1", port=args.port,
                log_level="warning")


if __name__ == "__main__":
    main()
