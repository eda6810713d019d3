"""`OpenAIPolicy`: any OpenAI-compatible server as a policy (vLLM `serve`, SGLang, `opd serve`).

Token-level bookkeeping needs token ids, so sampling goes through `/v1/completions` with the
context as token ids (one request for the whole batch) and vLLM's
`return_tokens_as_token_ids` extension, which `opd serve` also implements. Scoring uses
`echo` with `max_tokens: 0`. The tokenizer (for the engine's chat template) is loaded locally
from `tokenizer=` or from the `root` the server reports in `/v1/models`.

`chat()` is the plain chat-completions path with `logprobs`/`top_logprobs`, for black-box and
grey-box teachers that only see text.

Not covered: servers that return tokens only as strings (their ids cannot be recovered
exactly); streaming.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opd_selfplay.agents.base import Sample, SamplingParams
from opd_selfplay.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase


class ServerError(RuntimeError):
    """The server answered with an error or something this client cannot use."""


@dataclass(frozen=True)
class ChatResult:
    """One chat completion."""

    text: str
    """The assistant message content."""
    finish_reason: str
    """`stop` or `length`."""
    tokens: tuple[str, ...]
    """The sampled tokens as text pieces (empty when log-probs were not requested)."""
    logprobs: tuple[float, ...]
    """Their log-probs."""
    top_logprobs: tuple[dict[str, float], ...]
    """Per token, the top-k alternatives (empty dicts when not requested)."""


class OpenAIPolicy:
    """A policy served over the OpenAI HTTP API.

    Args:
        base_url: e.g. `http://127.0.0.1:8000/v1` (a missing `/v1` is added).
        tokenizer: local tokenizer folder or hub id; default: the server's model `root`.
        model: the model id to request; default: the first one the server lists.
        api_key: bearer token; default: `$OPENAI_API_KEY` when set.
        timeout_s: per-request timeout.
    """

    def __init__(
        self,
        base_url: str,
        tokenizer: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 600.0,
    ) -> None:
        url = base_url.rstrip("/")
        self.base_url = url if url.endswith("/v1") else url + "/v1"
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout_s = timeout_s
        listing = self._request("GET", "/models")
        models = listing.get("data") or []
        if not models:
            raise ServerError(f"{self.base_url}/models lists no model")
        first = models[0]
        self.model = model or str(first.get("id"))
        root = tokenizer or first.get("root") or self.model
        from opd_selfplay.agents.hf import load_tokenizer

        try:
            self._tokenizer = load_tokenizer(str(root))
        except OSError as exc:
            raise InputError(
                f"cannot load the tokenizer {root!r} for {self.base_url}: "
                f"{str(exc).splitlines()[0]}; pass --tokenizer PATH"
            ) from None

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self._tokenizer

    # -- HTTP -------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: Mapping[str, object] | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.api_key:
            req.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            with contextlib.suppress(ValueError, KeyError, TypeError):
                detail = json.loads(detail)["error"]["message"]
            raise ServerError(
                f"{method} {self.base_url}{path}: HTTP {exc.code}: {detail}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise InputError(f"cannot reach {self.base_url}{path}: {reason}") from None

    @staticmethod
    def _token_id(token: str) -> int:
        if not token.startswith("token_id:"):
            raise ServerError(
                "server returned tokens as text, not ids; it must support "
                "return_tokens_as_token_ids (vLLM >= 0.6, opd serve)"
            )
        return int(token[len("token_id:") :])

    # -- the policy protocol ----------------------------------------------------------
    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Sample]:
        """Sample one continuation per prompt in one batched `/v1/completions` request."""
        if not prompts:
            return []
        body: dict[str, object] = {
            "model": self.model,
            "prompt": [list(p) for p in prompts],
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "logprobs": 0,
            "return_tokens_as_token_ids": True,
            "skip_special_tokens": False,
        }
        if params.stop:
            body["stop"] = list(params.stop)
            body["include_stop_str_in_output"] = True
        if params.seed is not None:
            body["seed"] = params.seed
        reply = self._request("POST", "/completions", body)
        choices = sorted(reply.get("choices", []), key=lambda c: c.get("index", 0))
        if len(choices) != len(prompts):
            raise ServerError(f"asked for {len(prompts)} completions, got {len(choices)}")
        out = []
        for choice in choices:
            lp = choice.get("logprobs") or {}
            ids = tuple(self._token_id(t) for t in lp.get("tokens", []))
            logprobs = tuple(float(x) for x in lp.get("token_logprobs", []))
            out.append(
                Sample(
                    token_ids=ids,
                    logprobs=logprobs,
                    text=self._tokenizer.decode(list(ids), skip_special_tokens=True),
                    finish_reason="stop" if choice.get("finish_reason") == "stop" else "length",
                )
            )
        return out

    def score(
        self, sequences: Sequence[Sequence[int]], temperature: float = 1.0
    ) -> list[list[float]]:
        """Log-probs of every token via `echo` + `max_tokens: 0` (position 0 is 0.0)."""
        return [row[0] for row in self._echo(sequences, 0, temperature)]

    def top_logprobs(
        self, sequences: Sequence[Sequence[int]], k: int, temperature: float = 1.0
    ) -> list[tuple[list[list[int]], list[list[float]]]]:
        """Top-k next-token log-probs at every position (grey-box access), as in
        `HFPolicy.top_logprobs`."""
        out = []
        for _, top in self._echo(sequences, k, temperature):
            ids = [[self._token_id(t) for t in row] for row in top]
            lps = [list(row.values()) for row in top]
            out.append((ids, lps))
        return out

    def _echo(self, sequences, k: int, temperature: float):
        reply = self._request(
            "POST",
            "/completions",
            {
                "model": self.model,
                "prompt": [list(s) for s in sequences],
                "max_tokens": 0,
                "echo": True,
                "logprobs": k,
                "temperature": temperature,
                "return_tokens_as_token_ids": True,
            },
        )
        rows = []
        for choice in sorted(reply["choices"], key=lambda c: c.get("index", 0)):
            lp = choice["logprobs"]
            token_lps = [0.0 if x is None else float(x) for x in lp["token_logprobs"]]
            top = [t for t in lp.get("top_logprobs") or [] if t is not None]
            rows.append((token_lps, top))
        return rows

    def chat(
        self,
        messages: Sequence[Mapping[str, object]],
        params: SamplingParams | None = None,
        top_logprobs: int = 0,
    ) -> ChatResult:
        """One chat completion with token log-probs (black-box / grey-box teachers).

        Args:
            messages: OpenAI chat messages.
            params: sampling settings.
            top_logprobs: alternatives per token to return (0: only the sampled token's).
        """
        params = params or SamplingParams()
        body: dict[str, object] = {
            "model": self.model,
            "messages": list(messages),
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "logprobs": True,
        }
        if top_logprobs:
            body["top_logprobs"] = top_logprobs
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        choice = self._request("POST", "/chat/completions", body)["choices"][0]
        content = ((choice.get("logprobs") or {}).get("content")) or []
        return ChatResult(
            text=str(choice["message"].get("content") or ""),
            finish_reason=str(choice.get("finish_reason")),
            tokens=tuple(e["token"] for e in content),
            logprobs=tuple(float(e["logprob"]) for e in content),
            top_logprobs=tuple(
                {a["token"]: float(a["logprob"]) for a in e.get("top_logprobs") or []}
                for e in content
            ),
        )
