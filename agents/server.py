"""`opd serve`: a small OpenAI-compatible server over `HFPolicy`.

It lets a grey-box or black-box teacher run as a separate process, and it is what
`OpenAIPolicy` is tested against on loopback. Endpoints (the subset of the OpenAI API, with
vLLM's extensions, that the project uses):

- `GET  /v1/models`: one model; `root` is its folder (clients load the tokenizer from it).
- `POST /v1/completions`: `prompt` is text, a list of token ids, or a list of either (a batch,
  generated in one call); `max_tokens`, `temperature`, `top_p`, `stop`, `seed`, `logprobs`
  (top-k per position), `echo` (return the prompt's log-probs too; with `max_tokens: 0` this
  scores a sequence), and vLLM's `return_tokens_as_token_ids` (tokens as `token_id:N`).
- `POST /v1/chat/completions`: `messages`, `max_tokens`/`max_completion_tokens`,
  `temperature`, `top_p`, `stop`, `seed`, `logprobs` (bool), `top_logprobs` (k).

Requests are served one at a time (the model is not thread-safe); a batch belongs in one
request. Not covered: streaming, `n > 1`, tool-call parsing, authentication (bind to
loopback or put it behind a proxy).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opd_selfplay.agents.base import SamplingParams
from opd_selfplay.agents.hf import HFPolicy

_MAX_BODY = 64 * 1024 * 1024


class APIError(Exception):
    """A request error returned to the client as an OpenAI-style error object."""

    def __init__(self, message: str, status: int = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status


class PolicyServer:
    """Serves one `HFPolicy` over HTTP.

    Args:
        policy: the model to serve.
        model_name: the id clients pass as `model`.
        model_root: the folder reported as `root` in `/v1/models`.
        host: address to bind (default loopback).
        port: 0 picks a free port (see `.port`).
    """

    def __init__(
        self,
        policy: HFPolicy,
        model_name: str,
        model_root: str = "",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.policy = policy
        self.model_name = model_name
        self.model_root = model_root
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: object) -> None:  # quiet by default
                pass

            def do_GET(self) -> None:
                if self.path.rstrip("/") in ("/v1/models", "/models"):
                    self._send(HTTPStatus.OK, server.models())
                elif self.path.rstrip("/") in ("/health", "/v1/health"):
                    self._send(HTTPStatus.OK, {"status": "ok"})
                else:
                    self._send(HTTPStatus.NOT_FOUND, _error(f"no route {self.path}"))

            def do_POST(self) -> None:
                routes = {
                    "/v1/completions": server.completions,
                    "/v1/chat/completions": server.chat_completions,
                }
                route = routes.get(self.path.rstrip("/"))
                if route is None:
                    self._send(HTTPStatus.NOT_FOUND, _error(f"no route {self.path}"))
                    return
                try:
                    length = int(self.headers.get("Content-Length", "0"))
                    if length > _MAX_BODY:
                        raise APIError(f"request body over {_MAX_BODY} bytes")
                    body = json.loads(self.rfile.read(length) or b"{}")
                    if not isinstance(body, dict):
                        raise APIError("request body must be a JSON object")
                    self._send(HTTPStatus.OK, route(body))
                except json.JSONDecodeError as exc:
                    self._send(HTTPStatus.BAD_REQUEST, _error(f"invalid JSON: {exc.msg}"))
                except APIError as exc:
                    self._send(exc.status, _error(str(exc)))
                except (ValueError, TypeError) as exc:
                    self._send(HTTPStatus.BAD_REQUEST, _error(str(exc)))

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.httpd.server_address[0]}:{self.port}/v1"

    def start(self) -> PolicyServer:
        """Serve in a background thread (for tests and in-process teachers)."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- endpoints --------------------------------------------------------------------
    def models(self) -> dict:
        return {
            "object": "list",
            "data": [
                {
                    "id": self.model_name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "opd-selfplay",
                    "root": self.model_root,
                }
            ],
        }

    def _params(self, body: dict, default_max: int = 16) -> SamplingParams:
        stop = body.get("stop") or ()
        if isinstance(stop, str):
            stop = (stop,)
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens", default_max))
        try:
            return SamplingParams(
                max_new_tokens=max(int(max_tokens), 1),
                temperature=float(body.get("temperature", 1.0)),
                top_p=float(body.get("top_p", 1.0)),
                stop=tuple(str(s) for s in stop),
                seed=None if body.get("seed") is None else int(body["seed"]),
            )
        except ValueError as exc:
            raise APIError(str(exc)) from None

    def _prompts(self, prompt: object) -> list[list[int]]:
        tok = self.policy.tokenizer
        if isinstance(prompt, str):
            return [list(tok(prompt, add_special_tokens=False)["input_ids"])]
        if isinstance(prompt, list) and prompt and all(isinstance(x, int) for x in prompt):
            return [list(prompt)]
        if isinstance(prompt, list) and prompt:
            out = []
            for p in prompt:
                out.extend(self._prompts(p))
            return out
        raise APIError("prompt must be text, a list of token ids, or a non-empty list of those")

    def _token_repr(self, token_id: int, as_ids: bool) -> str:
        if as_ids:
            return f"token_id:{token_id}"
        return self.policy.tokenizer.decode([token_id])

    def completions(self, body: dict) -> dict:
        prompts = self._prompts(body.get("prompt"))
        vocab = len(self.policy.tokenizer)
        if any(not 0 <= t < vocab for p in prompts for t in p):
            raise APIError(f"prompt token ids must lie in [0, {vocab})")
        k = body.get("logprobs")
        as_ids = bool(body.get("return_tokens_as_token_ids", False))
        echo = bool(body.get("echo", False))
        max_tokens = int(body.get("max_tokens", 16))
        with self._lock:
            if max_tokens > 0:
                samples = self.policy.generate(prompts, self._params(body))
            else:
                samples = []
            choices = []
            for i, prompt in enumerate(prompts):
                gen = list(samples[i].token_ids) if samples else []
                gen_lp = list(samples[i].logprobs) if samples else []
                text = samples[i].text if samples else ""
                finish = samples[i].finish_reason if samples else "length"
                logprobs = None
                if k is not None:
                    logprobs = self._completion_logprobs(
                        prompt, gen, gen_lp, int(k), echo, as_ids, body
                    )
                if echo:
                    text = self.policy.tokenizer.decode(prompt) + text
                choices.append(
                    {"index": i, "text": text, "finish_reason": finish, "logprobs": logprobs}
                )
        n_prompt = sum(len(p) for p in prompts)
        n_gen = sum(len(s.token_ids) for s in samples)
        return {
            "id": f"cmpl-{uuid.uuid4().hex[:16]}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": choices,
            "usage": {
                "prompt_tokens": n_prompt,
                "completion_tokens": n_gen,
                "total_tokens": n_prompt + n_gen,
            },
        }

    def _completion_logprobs(
        self,
        prompt: Sequence[int],
        gen: list[int],
        gen_lp: list[float],
        k: int,
        echo: bool,
        as_ids: bool,
        body: dict,
    ) -> dict:
        """OpenAI legacy logprobs: tokens, token_logprobs, top_logprobs, text_offset."""
        full = [*prompt, *gen]
        temperature = float(body.get("temperature", 1.0)) or 1.0
        top = (
            self.policy.top_logprobs([full], max(k, 1), temperature=temperature)[0]
            if k > 0
            else None
        )
        start = 0 if echo else len(prompt)
        tokens, token_lps, tops = [], [], []
        if echo:
            scored = self.policy.score([full], temperature=temperature)[0]
        for pos in range(start, len(full)):
            tid = full[pos]
            tokens.append(self._token_repr(tid, as_ids))
            if pos == 0:
                token_lps.append(None)
                tops.append(None)
                continue
            if pos >= len(prompt):
                token_lps.append(gen_lp[pos - len(prompt)])
            else:
                token_lps.append(scored[pos])
            if top is not None:
                ids, lps = top[0][pos - 1], top[1][pos - 1]
                tops.append({self._token_repr(i, as_ids): lp for i, lp in zip(ids, lps)})
            else:
                tops.append(None)
        return {
            "tokens": tokens,
            "token_logprobs": token_lps,
            "top_logprobs": tops,
            "text_offset": [],
        }

    def chat_completions(self, body: dict) -> dict:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise APIError("messages must be a non-empty list")
        tok = self.policy.tokenizer
        kwargs = {"tools": body["tools"]} if body.get("tools") else {}
        try:
            text = tok.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, **kwargs
            )
        except Exception as exc:
            raise APIError(f"cannot render messages: {exc}") from None
        prompt = list(tok(text, add_special_tokens=False)["input_ids"])
        want_lp = bool(body.get("logprobs", False))
        k = int(body.get("top_logprobs") or 0)
        with self._lock:
            sample = self.policy.generate([prompt], self._params(body))[0]
            content_lp = None
            if want_lp:
                top = None
                if k > 0:
                    temperature = float(body.get("temperature", 1.0)) or 1.0
                    full = [*prompt, *sample.token_ids]
                    top = self.policy.top_logprobs([full], k, temperature=temperature)[0]
                content_lp = []
                for j, (tid, lp) in enumerate(zip(sample.token_ids, sample.logprobs)):
                    piece = tok.decode([tid])
                    entry = {"token": piece, "logprob": lp, "bytes": list(piece.encode())}
                    entry["top_logprobs"] = []
                    if top is not None:
                        ids, lps = top[0][len(prompt) - 1 + j], top[1][len(prompt) - 1 + j]
                        entry["top_logprobs"] = [
                            {
                                "token": tok.decode([i]),
                                "logprob": v,
                                "bytes": list(tok.decode([i]).encode()),
                            }
                            for i, v in zip(ids, lps)
                        ]
                    content_lp.append(entry)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:16]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": sample.text},
                    "finish_reason": sample.finish_reason,
                    "logprobs": {"content": content_lp} if want_lp else None,
                }
            ],
            "usage": {
                "prompt_tokens": len(prompt),
                "completion_tokens": len(sample.token_ids),
                "total_tokens": len(prompt) + len(sample.token_ids),
            },
        }


def _error(message: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error"}}
