"""POST /tokenize and /detokenize, in vLLM's request and response shapes (its server has them
at the root, not under /v1/); behind the API key like the generation routes."""

from __future__ import annotations

from fastapi import APIRouter

from serve.deps import EngineDep
from serve.engine import find_model
from serve.errors import InvalidRequestError
from serve.openapi import error_responses
from serve.protocol import DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse

router = APIRouter(tags=["tokenize"])

_ERRORS = error_responses(400, 404, 500, 503)


@router.post("/tokenize", response_model=TokenizeResponse, responses=_ERRORS)
async def tokenize(body: TokenizeRequest, engine: EngineDep) -> TokenizeResponse:
    """The token ids the model's tokenizer makes of `prompt`, or of `messages` rendered with
    the chat template: the very ids generation would see."""
    card = find_model(engine, body.model)
    if body.messages is not None:
        text = await engine.render_chat(body.model, [m.for_template() for m in body.messages])
        special = bool(body.add_special_tokens)
    else:
        text, special = body.prompt or "", body.add_special_tokens is not False
    ids = await engine.encode(body.model, text, add_special_tokens=special)
    return TokenizeResponse(count=len(ids), max_model_len=card.max_model_len, tokens=ids)


@router.post("/detokenize", response_model=DetokenizeResponse, responses=_ERRORS)
async def detokenize(body: DetokenizeRequest, engine: EngineDep) -> DetokenizeResponse:
    card = find_model(engine, body.model)
    bad = next((t for t in body.tokens if t >= card.vocab_size), None)
    if bad is not None:
        raise InvalidRequestError(f"Token id {bad} in 'tokens' is outside the vocabulary "
                                  f"(0..{card.vocab_size - 1})", param="tokens",
                                  code="invalid_token_id")
    return DetokenizeResponse(prompt=await engine.decode(body.model, body.tokens))
