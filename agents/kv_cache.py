"""KV-cache plumbing for `HFPolicy`: where decoding starts, the cache kept between calls
inside `reuse_kv()`, and the row-wise gathers, preallocation and prefix matching that reuse
and grouped prefill need. Plain full-attention cache layers only (sliding-window and other
layer kinds are detected and left to the ordinary path)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import DynamicCache


@dataclass
class Start:
    """Where decoding starts: the cache after the prompts and what it holds."""

    cache: DynamicCache
    last: torch.Tensor
    """Logits after each prompt, [B, V]."""
    mask: torch.Tensor
    """[B, T]: 1 on the cache's real positions, 0 on pads."""
    next_pos: torch.Tensor
    """[B, 1]: position id of each row's next token."""
    index: list[torch.Tensor]
    """Per row: the cache positions of its prompt's tokens, in order."""


@dataclass
class Stored:
    """The previous call's KV cache inside a `reuse_kv` block."""

    fingerprint: tuple[tuple[int, int], ...]
    tokens: list[list[int]]
    """Per row: the token ids whose keys and values the cache holds, in order."""
    index: list[torch.Tensor]
    """Per row: their positions in the cache."""
    keys: list[torch.Tensor]
    """Per layer: [B, kv heads, T, head dim]."""
    values: list[torch.Tensor]


def gathered(stored: Stored, rows, slots, keep) -> DynamicCache:
    """A cache whose row j holds the stored keys and values of row `rows[j]` at positions
    `slots[j]` (`[B, C]`), zeroed where `keep` (`[B, C, 1]`, optional) is False."""
    from transformers import DynamicCache

    cache = DynamicCache()
    for layer, (k, v) in enumerate(zip(stored.keys, stored.values)):
        # [B, C] gathers of [B, heads, T, dim] -> [B, C, heads, dim] -> [B, heads, C, dim]
        k, v = k[rows[:, None], :, slots], v[rows[:, None], :, slots]
        if keep is not None:
            k, v = k * keep[..., None], v * keep[..., None]
        cache.update(k.transpose(1, 2), v.transpose(1, 2), layer)
    return cache


def plain_layers(cache, classes: type | tuple[type, ...]) -> bool:
    """Whether every layer of `cache` is a plain full-attention layer (what joining, reusing
    and preallocating caches row by row assumes; sliding-window and other layers are not)."""
    layers = getattr(cache, "layers", None)
    kinds = classes if isinstance(classes, tuple) else (classes,)
    return bool(layers) and all(type(layer) in kinds for layer in layers)


def preallocated(cache: DynamicCache, length: int, config) -> DynamicCache:
    """`cache`'s keys and values in a `StaticCache` of `length` positions (or `cache`
    itself when its layers are not all plain full-attention ones)."""
    from transformers import StaticCache
    from transformers.cache_utils import DynamicLayer, StaticLayer

    static = StaticCache(config=config, max_cache_len=length)
    if not (plain_layers(cache, DynamicLayer) and plain_layers(static, StaticLayer)):
        return cache
    for i, layer in enumerate(cache.layers):
        static.update(layer.keys, layer.values, i)
    return static


def match_rows(prompts: list[list[int]], stored: list[list[int]]) -> list[int]:
    """For each prompt, a stored row whose tokens are a proper prefix of it (-1: none).

    Rows are tried in order from just after the previous match, since a rollout's live
    episodes keep their order from one turn to the next (some drop out); a miss scans all.
    """
    out: list[int] = []
    after = 0
    for p in prompts:
        found = -1
        for s in (*range(after, len(stored)), *range(after)):
            t = stored[s]
            if 0 < len(t) < len(p) and p[len(t) - 1] == t[-1] and p[: len(t)] == t:
                found = s
                break
        out.append(found)
        if found >= 0:
            after = found + 1
    return out
