"""Turn a MODEL string from the command line or a config into a policy.

`MODEL` is one of:
- `tiny`: the built-in offline model (built once, cached; see `agents.tiny`), or
  `tiny:KEY=VALUE,...` with fields of `TinyModelSpec` (e.g. `tiny:seed=1,hidden_size=256`,
  `tiny:tokenizer=bpe` for the second, BPE tokenizer);
- a local Hugging Face model folder (with `config.json`);
- `http(s)://host:port[/v1]`: an OpenAI-compatible server (`opd serve`, vLLM, SGLang…);
- `vllm:PATH`: in-process vLLM on a GPU (optional extra);
- a hub id such as `Qwen/Qwen2.5-0.5B-Instruct` (downloaded by transformers; needs network).
"""

from __future__ import annotations

import re
from pathlib import Path

from opd_selfplay.agents.base import Policy
from opd_selfplay.errors import InputError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def load_policy(
    model: str,
    device: str | None = None,
    dtype: str | None = None,
    tokenizer: str | None = None,
) -> Policy:
    """A policy for `model` (see the module docstring for the accepted forms).

    Args:
        model: the MODEL string.
        device: for local models: `cpu`, `cuda`…; default: CUDA when available.
        dtype: for local models: `float32`, `bfloat16`, `float16`.
        tokenizer: for servers: a tokenizer folder or hub id (default: the server's model root).
    Raises:
        InputError: when `model` is none of the accepted forms or the folder is not a model.
    """
    if model == "tiny" or model.startswith("tiny:"):
        from opd_selfplay.agents.hf import HFPolicy
        from opd_selfplay.agents.tiny import ensure_tiny_model

        spec = tiny_spec(model)
        return HFPolicy.from_pretrained(ensure_tiny_model(spec), device=device, dtype=dtype)
    if model.startswith(("http://", "https://")):
        from opd_selfplay.agents.remote import OpenAIPolicy

        return OpenAIPolicy(model, tokenizer=tokenizer)
    if model.startswith("vllm:"):
        from opd_selfplay.agents.vllm_local import VLLMPolicy

        return VLLMPolicy(model[len("vllm:") :], dtype=dtype)
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise InputError(
                f"--model {model}: folder has no config.json; pass a Hugging Face model folder, "
                "'tiny', or a server URL"
            )
        from opd_selfplay.agents.hf import HFPolicy

        return HFPolicy.from_pretrained(path, device=device, dtype=dtype)
    if _HUB_ID.match(model) and not model.startswith((".", "/", "~")):
        from opd_selfplay.agents.hf import HFPolicy

        try:
            return HFPolicy.from_pretrained(model, device=device, dtype=dtype)
        except OSError as exc:
            raise InputError(
                f"--model {model}: not a local folder, and loading it from the hub failed "
                f"({str(exc).splitlines()[0]})"
            ) from None
    raise InputError(
        f"--model {model}: no such folder; pass 'tiny', a Hugging Face model folder, "
        "an http(s) URL of an OpenAI-compatible server, or vllm:PATH"
    )


def tiny_spec(model: str):  # -> TinyModelSpec
    """The `TinyModelSpec` of a `tiny` or `tiny:KEY=VALUE,...` MODEL string."""
    import dataclasses

    from opd_selfplay.agents.tiny import TinyModelSpec

    if model == "tiny":
        return TinyModelSpec()
    # Field types may be strings (`from __future__ import annotations` in agents.tiny).
    fields = {f.name: f.type in (int, "int") for f in dataclasses.fields(TinyModelSpec)}
    values: dict[str, int | str] = {}
    for part in model[len("tiny:") :].split(","):
        key, sep, value = part.partition("=")
        is_int = fields.get(key, False)
        if not sep or key not in fields or (is_int and not value.lstrip("-").isdigit()):
            raise InputError(
                f"--model {model}: expected tiny:KEY=INT,... (or tokenizer=byte|bpe) with KEY "
                f"one of {', '.join(sorted(fields))}"
            )
        values[key] = int(value) if is_int else value
    try:
        return TinyModelSpec(**values)  # type: ignore[arg-type]
    except ValueError as exc:
        raise InputError(f"--model {model}: {exc}") from None
