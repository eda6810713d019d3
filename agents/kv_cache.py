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
    room: int = 0
    """Positions already allocated after the prompts (a preallocated decode cache)."""


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


def place_stored(stored: Stored, s: int, c: int, keys, values, row: int, at: int) -> None:
    """Copy the first `c` cached positions of stored row `s` into row `row` of the per-layer
    `keys` / `values` tensors, at positions `at` to `at + c`."""
    slots = stored.index[s][:c]
    first = int(slots[0])
    run = int(slots[-1]) - first == c - 1  # positions are increasing: one run is a slice
    for dst, src in ((keys, stored.keys), (values, stored.values)):
        for d, whole in zip(dst, src):
            got = whole[s, :, first : first + c] if run else whole[s][:, slots]
            d[row, :, at : at + c] = got


def new_buffers(config, batch: int, length: int, dtype, device):
    """Zeroed per-layer key and value tensors `[batch, kv heads, length, head dim]` for a
    decoder's cache (None when its config does not say the shape)."""
    import torch

    shape = layer_shape(config)
    if shape is None:
        return None
    layers, heads, dim = shape
    made = [torch.zeros((batch, heads, length, dim), dtype=dtype, device=device)]
    made += [torch.zeros_like(made[0]) for _ in range(2 * layers - 1)]
    return made[:layers], made[layers:]


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


def layer_shape(config) -> tuple[int, int, int] | None:
    """(layers, KV heads, head dim) of a decoder's cache, from its config (None: unknown)."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers = getattr(config, "num_hidden_layers", None)
    heads = getattr(config, "num_attention_heads", None)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    dim = getattr(config, "head_dim", None)
    if dim is None and heads and getattr(config, "hidden_size", None):
        dim = config.hidden_size // heads
    if not (layers and kv_heads and dim):
        return None
    return int(layers), int(kv_heads), int(dim)


def static_over(keys: list[torch.Tensor], values: list[torch.Tensor], filled: int, config):
    """A `StaticCache` whose layer i stores into `keys[i]` / `values[i]` (`[B, kv heads, T,
    head dim]`; views write through to their base) and holds `filled` positions already, so a
    forward appends at `filled` without any copy. None where this transformers' static
    layers do not keep their tensors and fill count as attributes (then copy instead)."""
    import torch
    from transformers import StaticCache
    from transformers.cache_utils import StaticLayer

    cache = StaticCache(config=config, max_cache_len=keys[0].shape[2])
    layers = getattr(cache, "layers", None)
    if not plain_layers(cache, StaticLayer) or len(layers) != len(keys):
        return None
    for layer, k, v in zip(layers, keys, values):
        if not isinstance(getattr(layer, "cumulative_length", None), torch.Tensor):
            return None
        layer.device = k.device
        layer.batch_size, layer.num_heads = k.shape[0], k.shape[1]
        layer.k_head_dim, layer.v_head_dim = k.shape[-1], v.shape[-1]
        layer.keys, layer.values = k, v
        layer.cumulative_length = torch.tensor(filled, device=k.device)
        layer.is_initialized = True
    return cache


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
