"""Where `HFPolicy.generate` starts decoding: the prefill paths and the KV cache kept
between calls inside `HFPolicy.reuse_kv()`.

Every path equals a separate forward over the same ids up to float rounding:
- `_start_padded`: one forward over the left-padded prompts;
- `_start_extending`: rows that extend a stored row run only their new tokens, in one
  padded forward after their stored keys and values;
- `_start_grouped` (CPU, long prompts): groups of equal (cached, total) length, no padding
  and so no attention mask, each group's forward writing in place into the batch's decode
  cache.
The data structures and row-wise copies are in `kv_cache`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from opd_selfplay.agents.kv_cache import (
    Start,
    Stored,
    gathered,
    layer_shape,
    match_rows,
    new_buffers,
    place_stored,
    plain_layers,
    static_over,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import DynamicCache

# From this many tokens of context, a CPU prefill runs in groups of equal length instead of
# one padded batch (see `Prefill._start`), and decoding writes into a preallocated cache
# (see `HFPolicy.generate`). Below it, neither pays.
LONG_PROMPT_TOKENS = 256


class Prefill:
    """The prefill half of `HFPolicy` (a mixin). Needs `model`, `device`, `pad_token_id`,
    `_cache_kw` (the forward's cache keyword) and `_stored` (the cache kept by `_store`)."""

    model: torch.nn.Module
    device: torch.device
    pad_token_id: int
    _cache_kw: str
    _stored: Stored | None

    def _left_pad(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        if not seqs or any(len(s) == 0 for s in seqs):
            raise ValueError("every prompt must have at least one token")
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s) :] = torch.as_tensor(list(s), dtype=torch.long)
            mask[i, width - len(s) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor | None, positions, cache, **kw):
        return self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=cache is not None,
            **({self._cache_kw: cache} if cache is not None else {}),
            **kw,
        )

    def _fingerprint(self) -> tuple[tuple[int, int], ...]:
        # Storage and in-place version of every weight: an optimizer step, `load_state_dict`
        # or `.to()` changes it, so a stored KV cache is never reused across a weight change.
        return tuple((p.data_ptr(), p._version) for p in self.model.parameters())

    def _start(self, prompts: list[list[int]], room: int) -> Start:
        """Run the prompts through the model: the KV cache and the logits after each prompt.

        Rows that extend a stored row (`reuse_kv`) run only their new tokens. On CPU, long
        prompts run in groups of equal (cached, total) length with no padding, hence no
        attention mask (with one, PyTorch's CPU attention was 2-3x slower at ~1,700 tokens on
        the tiny model, and every row pays for the longest), straight into a decode cache
        with `room` free positions after the prompts; below a few hundred tokens the extra
        forwards' fixed cost outweighs that.
        """
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        stored, self._stored = self._stored, None  # freed once this call has used it
        source = [-1] * len(prompts)
        if stored is not None and stored.fingerprint == self._fingerprint():
            source = match_rows(prompts, stored.tokens)
        if all(s < 0 for s in source):
            stored = None
        cached = [len(stored.tokens[s]) if stored and s >= 0 else 0 for s in source]
        groups: dict[tuple[int, int], list[int]] = {}
        for row, (p, c) in enumerate(zip(prompts, cached)):
            groups.setdefault((c, len(p)), []).append(row)
        if (
            max(len(p) for p in prompts) >= LONG_PROMPT_TOKENS
            and self.device.type == "cpu"
            and plain_layers(DynamicCache(config=self.model.config), DynamicLayer)
            and layer_shape(self.model.config) is not None
        ):
            return self._start_grouped(prompts, groups, stored, source, room)
        if stored is None:
            return self._start_padded(prompts)
        return self._start_extending(prompts, stored, source, cached, room)

    def _start_padded(self, prompts: list[list[int]]) -> Start:
        """One forward over the left-padded prompts."""
        import torch
        from transformers import DynamicCache

        ids, mask = self._left_pad(prompts)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        width = ids.shape[1]
        cache = DynamicCache(config=self.model.config)
        out = self._forward(ids, mask, positions, cache, logits_to_keep=1)
        index = [torch.arange(width - len(p), width) for p in prompts]
        return Start(cache, out.logits[:, -1, :], mask, positions[:, -1:] + 1, index)

    def _start_extending(
        self,
        prompts: list[list[int]],
        stored: Stored,
        source: list[int],
        cached: list[int],
        room: int,
    ) -> Start:
        """One forward over the new tokens of every row, after its stored keys and values.

        Row j is laid out as [pads][its cached c_j tokens][pads][its r_j new tokens], so the
        cached parts fill a left block and the new tokens a right one (the mask hides pads).
        On CPU the stored keys and values are copied once, row by row, into a cache with
        `room` free positions for decoding, and the forward appends to it in place; elsewhere
        one gather per layer builds the cache (a copy per row would be a kernel launch each).
        """
        import torch

        batch, device = len(prompts), self.device
        fresh = [len(p) - c for p, c in zip(prompts, cached)]
        width_c, width_r = max(cached), max(fresh)
        width = width_c + width_r
        slots = torch.zeros((batch, width_c), dtype=torch.long)
        ids = torch.full((batch, width_r), self.pad_token_id, dtype=torch.long)
        positions = torch.zeros((batch, width_r), dtype=torch.long)
        mask = torch.zeros((batch, width), dtype=torch.long)
        index = []
        for j, (p, c, r, s) in enumerate(zip(prompts, cached, fresh, source)):
            if s >= 0:
                slots[j, width_c - c :] = stored.index[s][:c]
            ids[j, width_r - r :] = torch.as_tensor(p[c:], dtype=torch.long)
            positions[j, width_r - r :] = torch.arange(c, c + r)
            mask[j, width_c - c : width_c] = 1
            mask[j, width - r :] = 1
            left = torch.arange(width_c - c, width_c)
            index.append(torch.cat([left, torch.arange(width - r, width)]))
        mask = mask.to(device)
        dtype = next(self.model.parameters()).dtype
        made = None
        if device.type == "cpu":  # row-by-row copies: on a GPU, one launch each; gather there
            made = new_buffers(self.model.config, batch, width + room, dtype, device)
        cache = None
        if made is not None:
            keys, values = made
            for j, (c, s) in enumerate(zip(cached, source)):
                if s >= 0:
                    place_stored(stored, s, c, keys, values, j, width_c - c)
            views = [k[:, :, :width] for k in keys], [v[:, :, :width] for v in values]
            cache = static_over(*views, width_c, self.model.config)
        if cache is None:  # this transformers' cache cannot be written in place: copies
            room = 0
            rows = torch.tensor([max(s, 0) for s in source], device=device)
            cache = gathered(stored, rows, slots.to(device), mask[:, :width_c, None].bool())
        out = self._forward(ids.to(device), mask, positions.to(device), cache, logits_to_keep=1)
        if room:
            cache = static_over(keys, values, width, self.model.config)
        next_pos = torch.tensor([[len(p)] for p in prompts], device=device)
        return Start(cache, out.logits[:, -1, :], mask, next_pos, index, room)

    def _start_grouped(
        self,
        prompts: list[list[int]],
        groups: dict[tuple[int, int], list[int]],
        stored: Stored | None,
        source: list[int],
        room: int,
    ) -> Start:
        """Forwards over groups of rows with equal (cached, total) lengths, no padding.

        The batch's cache is allocated once, left-padded, with `room` positions for decoding.
        A group of adjacent rows copies its stored keys and values into its slice of it and
        its forward appends there in place; other groups run on a copy that is then placed.
        (Per-group caches that grow by concatenation cost as much as the forwards on the
        tiny model: fresh allocations of ~0.5 MB fault their pages in.)
        """
        import torch
        from transformers import DynamicCache

        batch, device = len(prompts), self.device
        width = max(len(p) for p in prompts)
        total = width + room
        dtype = next(self.model.parameters()).dtype
        made = new_buffers(self.model.config, batch, total, dtype, device)
        assert made is not None  # `_start` checked the config's cache shape
        keys, values = made
        last = None
        for (c, n), rows in groups.items():
            lo, hi = rows[0], rows[-1] + 1
            cols = slice(width - n, width)
            part = None
            if hi - lo == len(rows):  # adjacent rows: work in the batch's cache itself
                k_in = [k[lo:hi, :, cols] for k in keys]
                v_in = [v[lo:hi, :, cols] for v in values]
                for j in rows if c else ():
                    assert stored is not None
                    place_stored(stored, source[j], c, k_in, v_in, j - lo, 0)
                part = static_over(k_in, v_in, c, self.model.config)
            placed = part is not None
            if part is None and c:  # the rows' stored keys and values: [rows, heads, c, dim]
                assert stored is not None
                src = torch.tensor([source[j] for j in rows], device=device)
                slots = torch.stack([stored.index[source[j]][:c] for j in rows]).to(device)
                part = gathered(stored, src, slots, None)
            elif part is None:
                part = DynamicCache(config=self.model.config)
            ids = torch.tensor([prompts[j][c:] for j in rows], device=device)
            positions = torch.arange(c, n, device=device).expand(len(rows), -1)
            out = self._forward(ids, None, positions, part, logits_to_keep=1)
            rows_t = torch.as_tensor(rows, device=device)
            if last is None:
                last = out.logits.new_empty((batch, out.logits.shape[-1]))
            last[rows_t] = out.logits[:, -1, :]
            if not placed:
                for i, layer in enumerate(part.layers):
                    keys[i][rows_t, :, cols] = layer.keys
                    values[i][rows_t, :, cols] = layer.values
        cache = static_over(keys, values, width, self.model.config) if room else None
        if cache is None:
            room = 0
            cache = DynamicCache(config=self.model.config)
            for i, (k, v) in enumerate(zip(keys, values)):
                cache.update(k[:, :, :width], v[:, :, :width], i)
        _, mask = self._left_pad(prompts)
        index = [torch.arange(width - len(p), width) for p in prompts]
        next_pos = torch.tensor([[len(p)] for p in prompts], device=device)
        return Start(cache, last, mask, next_pos, index, room)

    def _store(
        self,
        prompts: list[list[int]],
        start: Start,
        cache: DynamicCache,
        token_rows: list[list[int]],
        lengths: list[int],
        steps: int,
    ) -> None:
        """Keep this call's cache for the next call in a `reuse_kv` block: per row, the
        prompt and the sampled tokens that went through the model (all but the last step's)."""
        import torch
        from transformers.cache_utils import DynamicLayer, StaticLayer

        if not plain_layers(cache, (DynamicLayer, StaticLayer)):
            return
        width = start.mask.shape[1]
        tokens, index = [], []
        for j, p in enumerate(prompts):
            fed = min(lengths[j], steps - 1)
            tokens.append([*p, *token_rows[j][:fed]])
            index.append(torch.cat([start.index[j], torch.arange(width, width + fed)]))
        layers = cache.layers
        self._stored = Stored(
            self._fingerprint(),
            tokens,
            index,
            [layer.keys for layer in layers],
            [layer.values for layer in layers],
        )
