"""The built-in tiny model: a real transformers checkpoint made offline, in a second.

`build_tiny_model(path)` writes a Hugging Face model folder (config, safetensors weights,
tokenizer, chat template) that loads through exactly the same code path as a downloaded model,
so the tests and `opd demo` exercise the real loading code with nothing downloaded.

- Tokenizer: byte-level (every byte is a token; no merges), made with the `tokenizers`
  library, so any Unicode text round-trips. Special tokens: `<|endoftext|>` (padding), one
  token per role (`<|system|>`, `<|user|>`, `<|assistant|>`, `<|tool|>`) and `<|end|>` (end of
  a message, the EOS). The chat template marks each message with its role token and `<|end|>`
  (two tokens of markup a message: a byte-level model pays for every character of context),
  renders tool calls as `<tool_call>{json}</tool_call>`, and supports `tool` messages and a
  `tools` list. It is prefix-consistent: rendering a longer conversation extends the render
  of a shorter one, which multi-turn rollouts need.
- Second tokenizer (`TinyModelSpec(tokenizer="bpe")`, `tiny:tokenizer=bpe`): a 512-token
  byte-level BPE trained, deterministically and in a fraction of a second, with the
  `tokenizers` library on text generated here (arithmetic, short English, tool calls, a few
  accented, CJK and emoji words, so some merges split UTF-8 characters), with a ChatML
  template (`<|im_start|>role\n...<|im_end|>\n`; EOS `<|im_end|>`, padding
  `<|endoftext|>`). It exists so that tests have two real, different tokenizers and chat
  templates (cross-tokenizer distillation, `opd_selfplay.teachers.cross_tokenizer`).
- Model: a Qwen2 causal LM (the architecture of Qwen2.5), random init from a fixed seed.

Trap handled here: transformers 5 maps a `model_type: qwen2` folder to Qwen's own tokenizer
class, which silently replaces a custom pre-tokenizer and decoder; the folder therefore records
`tokenizer_class: PreTrainedTokenizerFast` and `agents.hf.load_tokenizer` honours it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

ROLES = ("system", "user", "assistant", "tool")
SPECIAL_TOKENS = ("<|endoftext|>", "<|end|>", *(f"<|{r}|>" for r in ROLES))

# One token opens each message (its role) and one closes it (`<|end|>`, the EOS): a byte-level
# model pays for every character of its context, so the markup is kept to two tokens a message.
CHAT_TEMPLATE = (
    "{% if tools %}"
    "<|system|>"
    "{% if messages and messages[0].role == 'system' %}{{ messages[0].content }}\n{% endif %}"
    "Tools:\n{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}"
    'Call a tool as <tool_call>{"name": ..., "arguments": {...}}</tool_call>.<|end|>'
    "{% endif %}"
    "{% for message in messages %}"
    "{% if not (tools and loop.first and message.role == 'system') %}"
    "<|{{ message.role }}|>{{ message.content }}"
    "{% if message.tool_calls %}"
    "{% for call in message.tool_calls %}"
    '<tool_call>{"name": {{ call.function.name | tojson }}, "arguments": '
    "{% if call.function.arguments is string %}{{ call.function.arguments }}"
    "{% else %}{{ call.function.arguments | tojson }}{% endif %}}</tool_call>"
    "{% endfor %}"
    "{% endif %}"
    "<|end|>"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

BPE_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
BPE_VOCAB_SIZE = 512

# ChatML (the Qwen/OpenAI layout): another template than the byte tokenizer's, so that
# cross-tokenizer tests also cross templates. Prefix-consistent like the byte one.
CHATML_TEMPLATE = (
    "{% if tools %}"
    "<|im_start|>system\n"
    "{% if messages and messages[0].role == 'system' %}{{ messages[0].content }}\n{% endif %}"
    "Tools:\n{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}"
    'Call a tool as <tool_call>{"name": ..., "arguments": {...}}</tool_call>.<|im_end|>\n'
    "{% endif %}"
    "{% for message in messages %}"
    "{% if not (tools and loop.first and message.role == 'system') %}"
    "<|im_start|>{{ message.role }}\n{{ message.content }}"
    "{% if message.tool_calls %}"
    "{% for call in message.tool_calls %}"
    '<tool_call>{"name": {{ call.function.name | tojson }}, "arguments": '
    "{% if call.function.arguments is string %}{{ call.function.arguments }}"
    "{% else %}{{ call.function.arguments | tojson }}{% endif %}}</tool_call>"
    "{% endfor %}"
    "{% endif %}"
    "<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TOKENIZERS = ("byte", "bpe")


@dataclass(frozen=True)
class TinyModelSpec:
    """Size of the tiny Qwen2 model. The default has about 1.0 M parameters."""

    hidden_size: int = 128
    """Width of the residual stream."""
    num_layers: int = 4
    """Transformer blocks."""
    num_heads: int = 4
    """Attention heads."""
    num_kv_heads: int = 2
    """Key/value heads (grouped-query attention)."""
    intermediate_size: int = 512
    """MLP width."""
    max_positions: int = 2048
    """Longest context."""
    seed: int = 0
    """Seed of the random initialisation."""
    tokenizer: str = "byte"
    """`byte` (every byte a token, `<|role|>...<|end|>` template) or `bpe` (a 512-token
    byte-level BPE with a ChatML template)."""

    def __post_init__(self) -> None:
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(
                f"TinyModelSpec.tokenizer must be one of {', '.join(TOKENIZERS)}, "
                f"got {self.tokenizer!r}"
            )

    def key(self) -> str:
        """A short folder name that changes whenever the spec (or the recipe version) does.
        The default tokenizer adds nothing, so the keys of existing caches stay valid."""
        s = self
        tok = "" if s.tokenizer == "byte" else f"-t{s.tokenizer}"
        return (
            f"tiny-v2-h{s.hidden_size}-l{s.num_layers}-a{s.num_heads}-kv{s.num_kv_heads}"
            f"-i{s.intermediate_size}-p{s.max_positions}-s{s.seed}{tok}"
        )


def build_tokenizer(kind: str = "byte"):  # -> PreTrainedTokenizerFast
    """The tiny tokenizer with its chat template (not saved).

    Args:
        kind: `byte` or `bpe` (see the module docstring).
    """
    if kind == "bpe":
        return build_bpe_tokenizer()
    if kind != "byte":
        raise ValueError(f"tokenizer kind must be one of {', '.join(TOKENIZERS)}, got {kind!r}")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=[f"<|{r}|>" for r in ROLES],
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
    )
    tok.add_special_tokens({"additional_special_tokens": [f"<|{r}|>" for r in ROLES]})
    return tok


def bpe_corpus() -> list[str]:
    """The deterministic text the BPE tokenizer is trained on: arithmetic like
    `opd/Arithmetic-v0`'s, short English, tool calls, and some multi-byte words (accents, CJK,
    emoji) frequent enough that merges form inside and across UTF-8 characters."""
    import random

    rng = random.Random(0)
    words = [
        "the",
        "answer",
        "is",
        "a",
        "number",
        "try",
        "again",
        "too",
        "high",
        "low",
        "correct",
        "call",
        "tool",
        "search",
        "result",
        "weather",
        "city",
        "value",
        "sum",
        "total",
        "first",
        "then",
        "because",
        "so",
        "we",
        "add",
        "subtract",
        "multiply",
        "check",
        "it",
    ]
    unicode_words = ["café", "naïve", "über", "数学", "数字", "東京", "こんにちは", "🙂", "👍", "Ω"]
    lines = []
    for i in range(3000):
        lines.append(f"{rng.randrange(1000)}{rng.choice('+-*')}{rng.randrange(100)}=")
        n = rng.randrange(3, 12)
        lines.append(" ".join(rng.choice(words) for _ in range(n)) + rng.choice(".!?,"))
        if i % 3 == 0:
            n = rng.randrange(2, 6)
            lines.append(" ".join(rng.choice(unicode_words + words) for _ in range(n)))
        if i % 5 == 0:
            args = json.dumps({"x": rng.randrange(100)})
            lines.append(f'{{"name": "{rng.choice(words)}", "arguments": {args}}}')
    return lines


def build_bpe_tokenizer():  # -> PreTrainedTokenizerFast
    """The tiny byte-level BPE tokenizer with the ChatML template (not saved).

    Training is deterministic (fixed corpus; the `tokenizers` trainer breaks ties by pair
    ids), so every build gives the same vocabulary and merges.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=2,
        special_tokens=list(BPE_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte: any text encodes
        show_progress=False,
    )
    core.train_from_iterator(bpe_corpus(), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
        chat_template=CHATML_TEMPLATE,
        model_max_length=2048,
    )


def build_tiny_model(path: str | os.PathLike[str], spec: TinyModelSpec | None = None) -> Path:
    """Write a tiny Qwen2 model folder at `path` (created; must not exist or be empty).

    Args:
        path: destination folder.
        spec: model size; the default is about 1.0 M parameters.
    Returns:
        The folder, loadable with `HFPolicy.from_pretrained` like any Hugging Face model.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    spec = spec or TinyModelSpec()
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(spec.tokenizer)
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        intermediate_size=spec.intermediate_size,
        max_position_embeddings=spec.max_positions,
        tie_word_embeddings=True,
        bos_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    with torch.random.fork_rng():  # leave the caller's global RNG untouched
        torch.manual_seed(spec.seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.pad_token_id
    )
    model.save_pretrained(out)
    tok.save_pretrained(out)
    # Record the class explicitly so that `load_tokenizer` does not let the `qwen2` model type
    # pick Qwen's tokenizer class (see the module docstring).
    cfg_path = out / "tokenizer_config.json"
    tok_cfg = json.loads(cfg_path.read_text())
    tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(tok_cfg, indent=2))
    (out / "opd_tiny_spec.json").write_text(json.dumps(asdict(spec)))
    return out


def cache_dir() -> Path:
    """Where built models are cached: `$OPD_CACHE_DIR`, else `~/.cache/opd-selfplay`."""
    root = os.environ.get("OPD_CACHE_DIR") or os.path.join(Path.home(), ".cache", "opd-selfplay")
    return Path(root)


def ensure_tiny_model(spec: TinyModelSpec | None = None) -> Path:
    """The cached tiny model folder, built on first use (atomically: a concurrent builder
    never sees a half-written folder).

    Returns:
        Path of the model folder.
    """
    spec = spec or TinyModelSpec()
    target = cache_dir() / spec.key()
    if (target / "config.json").exists() and (target / "tokenizer.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        build_tiny_model(tmp, spec)
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race; its folder is complete
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
