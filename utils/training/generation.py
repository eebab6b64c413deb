"""Text from a trained causal LM: a prompt in, the prompt and its continuation out. From an
encoder-decoder: a source in, the target it generates out.

    generate_text(adapted, tok, "def main(", max_new_tokens=40)                # sampled
    generate_text(adapted, tok, ["The", "A"], temperature=0)                     # greedy
    generate_text(adapted, tok, "x", temperature=0.8, top_k=50, top_p=0.95, seed=1)

Decoding is `UniversalModelAdapter.generate` (context cropped to the model's maximum,
stopping at the tokenizer's end-of-sequence token); this module adds the tokenizer on
both sides and a seed, so two calls with the same arguments give the same text.
"""

from __future__ import annotations

from typing import Any

import torch


def generate_text(
    model: Any,
    tokenizer: Any,
    prompt: str | list[str],
    *,
    max_new_tokens: int = 50,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
) -> str | list[str]:
    """Continue `prompt` (a string or a list of them) with `model` (an nn.Module,
    AdaptedModel or UniversalModelAdapter); an encoder-decoder gives the target it generates
    for the prompt as its source. `temperature=0` is greedy; `top_k` keeps the k most likely
    tokens, `top_p` the smallest set reaching that probability."""
    _validate(max_new_tokens, temperature, top_k, top_p)
    module = _lightning_module(model)
    tok = getattr(tokenizer, "tokenizer", tokenizer)  # a TokenizerChoice holds one
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    generator = torch.Generator(device=module.device).manual_seed(seed)
    texts = []
    for text in prompts:  # one at a time: prompts of different lengths need no padding
        ids = torch.tensor([_prompt_ids(tok, text)], dtype=torch.long)
        out = module.generate(
            ids,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            eos_token_id=tok.eos_token_id,
            generator=generator,
        )
        texts.append(tok.decode(out[0].tolist(), skip_special_tokens=True))
    return texts[0] if isinstance(prompt, str) else texts


def _lightning_module(model: Any) -> Any:
    from utils.adapters.lightning_module import UniversalModelAdapter

    return model if isinstance(model, UniversalModelAdapter) else UniversalModelAdapter(model)


def _prompt_ids(tok: Any, text: str) -> list[int]:
    """The prompt's ids; an empty prompt starts from the beginning-of-text token."""
    ids = tok(text, add_special_tokens=False)["input_ids"] if text else []
    if ids:
        return ids
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    if start is None:
        raise ValueError(
            "generate_text: the prompt is empty and the tokenizer has no "
            "beginning- or end-of-text token to start from; give a prompt"
        )
    return [start]


def _validate(max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None) -> None:
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"generate_text(max_new_tokens={max_new_tokens!r}): give a positive integer")
    if not temperature >= 0:
        raise ValueError(f"generate_text(temperature={temperature!r}): give 0 (greedy) or a positive number")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"generate_text(top_k={top_k!r}): give a positive integer or None")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"generate_text(top_p={top_p!r}): give a number in (0, 1] or None")
