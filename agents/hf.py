"""`HFPolicy`: a Hugging Face transformers causal LM as a policy, on CPU or GPU.

Sampling is our own loop over the model's forward with a KV cache rather than
`model.generate`, because the rollout engine needs, for every sampled token, the log-prob
under exactly the distribution it was drawn from. Recomputing log-probs from `generate`'s
scores is where several peers drift from the trainer's forward pass (temperature applied in
one place and not the other, or padding-dependent positions). Here the log-prob returned for
a token is `log_softmax(logits / T)` of the same forward that sampled it, and left padding is
handled with explicit position ids, so a separate forward over the same ids reproduces it.

Not covered: beam search, speculative decoding, repetition penalties.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from opd_selfplay.agents.base import Sample, SamplingParams
from opd_selfplay.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

_FAST_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")
# Longest prompt (tokens) from which a CPU prefill of prompts of different lengths runs in
# groups of equal length instead of one padded batch (see `HFPolicy._prefill`).
_GROUPED_PREFILL_MIN_TOKENS = 256


def load_tokenizer(path: str | os.PathLike[str]) -> PreTrainedTokenizerBase:
    """Load a tokenizer from a model folder or hub id, honouring a generic fast tokenizer.

    transformers 5 maps a folder whose `config.json` says `model_type: qwen2` to Qwen's own
    tokenizer class even when `tokenizer_config.json` names the generic
    `PreTrainedTokenizerFast`, silently swapping a custom pre-tokenizer and decoder. A folder
    that names the generic class is therefore loaded with it directly.

    Args:
        path: a local model folder or a hub id.
    Returns:
        The tokenizer, with its chat template.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    cfg = Path(path) / "tokenizer_config.json"
    if cfg.is_file():
        try:
            cls = json.loads(cfg.read_text(encoding="utf-8")).get("tokenizer_class")
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{cfg}: not valid JSON ({exc.msg}); fix or re-save the tokenizer"
            ) from None
        if cls in _FAST_CLASSES:
            return PreTrainedTokenizerFast.from_pretrained(str(path))
    return AutoTokenizer.from_pretrained(str(path))


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return frozenset(ids)


class HFPolicy:
    """A transformers causal LM that samples with a KV cache and scores token sequences.

    Args:
        model: a causal LM (any architecture `AutoModelForCausalLM` loads).
        tokenizer: its tokenizer, with a chat template for multi-turn rollouts.
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        self.model = model
        self._tokenizer = tokenizer
        self.eos_token_ids = _eos_ids(model, tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_token_id = int(pad if pad is not None else min(self.eos_token_ids or {0}))
        # transformers 5 renamed the forward's `past_key_values` to `cache`.
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT
        params = inspect.signature(base.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        device: str | None = None,
        dtype: str | None = None,
    ) -> HFPolicy:
        """Load a model folder (or hub id) with its tokenizer.

        Args:
            path: local folder with `config.json`, or a hub id.
            device: `cpu`, `cuda`, `cuda:1`…; default: CUDA when available.
            dtype: `float32`, `bfloat16` or `float16`; default: float32 on CPU, bfloat16 on GPU.
        """
        import torch
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype is None:
            torch_dtype = torch.float32 if device == "cpu" else torch.bfloat16
        else:
            torch_dtype = getattr(torch, dtype, None)
            if not isinstance(torch_dtype, torch.dtype):
                raise InputError(f"dtype {dtype!r}: use float32, bfloat16 or float16")
        tokenizer = load_tokenizer(path)
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype)
        model.to(device).eval()
        return cls(model, tokenizer)

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self._tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- helpers ------------------------------------------------------------------------
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

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache, **kw):
        return self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=cache is not None,
            **({self._cache_kw: cache} if cache is not None else {}),
            **kw,
        )

    def _prefill(
        self,
        prompts: Sequence[Sequence[int]],
        ids: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
    ):  # -> tuple[DynamicCache, torch.Tensor]
        """The KV cache of the left-padded prompts and the logits after each prompt (`[B, V]`).

        One batched forward, except for long prompts of different lengths on CPU: there the
        rows are run in groups of equal length (no padding, so no attention mask) and their
        caches are joined, left-padded, into the batch's cache. With a padding mask, PyTorch's
        CPU attention leaves its fused causal kernel for the generic one, 2-3x slower at
        ~1,700 tokens (measured on the tiny model; the tool-use env's prompts), and every row
        pays for the longest one; below a few hundred tokens the extra forwards' fixed cost
        outweighs that. The values are those of the same forward without padding, which is
        what a separate forward over the same ids computes (the decode steps mask the pads).
        """
        import torch
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        cache = DynamicCache(config=self.model.config)
        width = ids.shape[1]
        lengths = [len(p) for p in prompts]
        groups: dict[int, list[int]] = {}
        for row, n in enumerate(lengths):
            groups.setdefault(n, []).append(row)
        plain = all(type(layer) is DynamicLayer for layer in getattr(cache, "layers", [None]))
        if (
            len(groups) == 1
            or width < _GROUPED_PREFILL_MIN_TOKENS
            or ids.device.type != "cpu"
            or not plain
        ):
            out = self._forward(ids, mask, positions, cache, logits_to_keep=1)
            return cache, out.logits[:, -1, :]
        last = None
        keys: list[torch.Tensor] = []
        values: list[torch.Tensor] = []
        for n, rows in groups.items():
            part = DynamicCache(config=self.model.config)
            index = torch.as_tensor(rows, device=ids.device)
            out = self._forward(
                ids[index, width - n :], None, positions[index, width - n :], part, logits_to_keep=1
            )
            if last is None:
                last = out.logits.new_empty((len(prompts), out.logits.shape[-1]))
            last[index] = out.logits[:, -1, :]
            for layer_idx, layer in enumerate(part.layers):
                if len(keys) <= layer_idx:  # [B, kv heads, width, head dim], zeros on the pads
                    _, h, _, d = layer.keys.shape
                    keys.append(layer.keys.new_zeros((len(prompts), h, width, d)))
                    d = layer.values.shape[-1]
                    values.append(layer.values.new_zeros((len(prompts), h, width, d)))
                keys[layer_idx][index, :, width - n :] = layer.keys
                values[layer_idx][index, :, width - n :] = layer.values
        for layer_idx, (k, v) in enumerate(zip(keys, values)):
            cache.update(k, v, layer_idx)
        return cache, last

    # -- sampling -----------------------------------------------------------------------
    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Sample]:
        """Sample one continuation per prompt, batched with left padding and a KV cache.

        Args:
            prompts: context token ids per row.
            params: sampling settings.
        Returns:
            One `Sample` per prompt.
        """
        import torch

        if not prompts:
            return []
        tok = self._tokenizer
        ids, mask = self._left_pad(prompts)
        batch = ids.shape[0]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(params.seed)
        greedy = params.temperature == 0.0
        temp = 1.0 if greedy else params.temperature
        eos = torch.tensor(sorted(self.eos_token_ids) or [-1], device=self.device)
        longest_stop = max((len(s) for s in params.stop), default=0)

        # Per step, tensors only (no per-row Python and no host sync but one `all()`): at this
        # model size the loop's overhead is comparable to the forward pass itself.
        chosen: list[torch.Tensor] = []
        chosen_lp: list[torch.Tensor] = []
        done = torch.zeros(batch, dtype=torch.bool, device=self.device)
        length = torch.full((batch,), -1, dtype=torch.long, device=self.device)
        pad = torch.full((batch,), self.pad_token_id, device=self.device)
        width = ids.shape[1]
        full_mask = torch.ones(
            (batch, width + params.max_new_tokens), dtype=mask.dtype, device=self.device
        )
        full_mask[:, :width] = mask
        texts: list[list[int]] = [[] for _ in range(batch)]  # only kept for stop strings
        next_pos = positions[:, -1:] + 1
        with torch.inference_mode():
            cache, last = self._prefill(prompts, ids, mask, positions)
            for step in range(params.max_new_tokens):
                logp = torch.log_softmax(last.float() / temp, dim=-1)
                if greedy:
                    choice = logp.argmax(dim=-1)
                else:
                    probs = logp.exp()
                    if params.top_p < 1.0:
                        probs = _top_p_filter(probs, params.top_p)
                    choice = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
                choice = torch.where(done, pad, choice)
                chosen.append(choice)
                chosen_lp.append(logp.gather(-1, choice[:, None]).squeeze(-1))
                ended = torch.isin(choice, eos) & ~done
                if longest_stop:
                    for row, token in enumerate(choice.tolist()):
                        if done[row]:
                            continue
                        texts[row].append(token)
                        if _hits_stop(tok, texts[row], params.stop, longest_stop):
                            ended[row] = True
                length = torch.where(ended, step + 1, length)
                done = done | ended
                if bool(done.all()):
                    break
                out = self._forward(
                    choice[:, None], full_mask[:, : width + step + 1], next_pos, cache
                )
                last = out.logits[:, -1, :]
                next_pos = next_pos + 1
        steps = len(chosen)
        token_rows = torch.stack(chosen, dim=1).tolist()
        lp_rows = torch.stack(chosen_lp, dim=1).tolist()
        samples = []
        for i, raw in enumerate(length.tolist()):
            n = steps if raw < 0 else raw
            samples.append(
                Sample(
                    token_ids=tuple(token_rows[i][:n]),
                    logprobs=tuple(lp_rows[i][:n]),
                    text=tok.decode(token_rows[i][:n], skip_special_tokens=True),
                    finish_reason="length" if raw < 0 else "stop",
                )
            )
        return samples

    # -- scoring ------------------------------------------------------------------------
    def logits(self, sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward pass over right-padded sequences (gradients follow the caller's mode).

        Returns:
            `(logits_BTV, mask_BT)`: logits at every position (position t predicts token t+1)
            and 1 on real tokens.
        """
        import torch

        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for i, s in enumerate(sequences):
            ids[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
            mask[i, : len(s)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        out = self.model(input_ids=ids, attention_mask=mask, use_cache=False)
        return out.logits, mask

    def score(
        self, sequences: Sequence[Sequence[int]], temperature: float = 1.0
    ) -> list[list[float]]:
        """Log-prob of every token given its prefix, `log_softmax(logits / T)`.

        Returns:
            Per sequence a list of the same length; position 0 is 0.0.
        """
        import torch

        if not sequences:
            return []
        with torch.inference_mode():
            logits, _ = self.logits(sequences)
            logp = torch.log_softmax(logits[:, :-1].float() / temperature, dim=-1)
            width = logits.shape[1]
            targets = torch.zeros((len(sequences), width), dtype=torch.long, device=logits.device)
            for i, s in enumerate(sequences):
                targets[i, : len(s)] = torch.as_tensor(list(s))
            token_lp = logp.gather(-1, targets[:, 1:, None]).squeeze(-1)
        rows = token_lp.tolist()
        return [[0.0, *rows[i][: len(s) - 1]] for i, s in enumerate(sequences)]

    def top_logprobs(
        self, sequences: Sequence[Sequence[int]], k: int, temperature: float = 1.0
    ) -> list[tuple[list[list[int]], list[list[float]]]]:
        """The k most likely next tokens at every position (what a grey-box server returns).

        Returns:
            Per sequence `(ids, logprobs)`, each `len(seq) - 1` rows of k: row t is the
            distribution over token t + 1.
        """
        import torch

        out = []
        with torch.inference_mode():
            logits, _ = self.logits(sequences)
            logp = torch.log_softmax(logits.float() / temperature, dim=-1)
            values, indices = logp.topk(k, dim=-1)
            for i, s in enumerate(sequences):
                n = len(s) - 1
                out.append((indices[i, :n].tolist(), values[i, :n].tolist()))
        return out


def _top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero the tail outside the smallest set of tokens whose mass reaches `top_p`."""
    import torch

    sorted_p, order = probs.sort(dim=-1, descending=True)
    cum = sorted_p.cumsum(dim=-1)
    drop = (cum - sorted_p) >= top_p  # keep the token that crosses the threshold
    sorted_p = sorted_p.masked_fill(drop, 0.0)
    return torch.zeros_like(probs).scatter(-1, order, sorted_p)


def _hits_stop(
    tok: PreTrainedTokenizerBase, ids: list[int], stops: tuple[str, ...], longest: int
) -> bool:
    # A token decodes to at least one character except for partial UTF-8 bytes, so the last
    # `longest + 4` tokens cover any stop string that the newest token could have completed.
    tail = tok.decode(ids[-(longest + 4) :], skip_special_tokens=True)
    return any(s in tail for s in stops)
