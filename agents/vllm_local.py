"""`VLLMPolicy`: in-process vLLM (`vllm.LLM`) as the rollout backend on a GPU.

vLLM is an optional extra (`pip install 'opd-selfplay[vllm]'`) and is imported lazily; its
tests are marked `gpu`/`vllm` and skipped without a GPU. Log-probs are requested as
`processed_logprobs` so that they are taken after temperature, like `HFPolicy`'s.
`load_weights` pushes the trainer's new weights into the engine after each optimizer step.

Not covered: tensor-parallel engines across processes (weights are loaded in-process only),
LoRA adapters.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from opd_selfplay.agents.base import Sample, SamplingParams
from opd_selfplay.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedTokenizerBase


class VLLMPolicy:
    """A vLLM engine in this process.

    Args:
        model: a model folder or hub id.
        dtype: `bfloat16` (default), `float16`, `float32`.
        gpu_memory_utilization: fraction of GPU memory vLLM may take.
        **engine_kwargs: passed to `vllm.LLM`.
    """

    def __init__(
        self,
        model: str,
        dtype: str | None = None,
        gpu_memory_utilization: float = 0.5,
        **engine_kwargs: object,
    ) -> None:
        # Keep the engine in this process so that weights can be loaded without IPC.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        try:
            import vllm
        except ImportError:
            raise InputError(
                "vllm:MODEL needs vLLM and a GPU: pip install 'opd-selfplay[vllm]'"
            ) from None
        from opd_selfplay.agents.hf import load_tokenizer

        self._vllm = vllm
        self._tokenizer = load_tokenizer(model)
        self.llm = vllm.LLM(
            model=model,
            dtype=dtype or "bfloat16",
            gpu_memory_utilization=gpu_memory_utilization,
            logprobs_mode="processed_logprobs",
            **engine_kwargs,
        )

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self._tokenizer

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Sample]:
        """Sample one continuation per prompt; vLLM batches them internally."""
        vllm = self._vllm
        sp = vllm.SamplingParams(
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            stop=list(params.stop) or None,
            include_stop_str_in_output=True,
            seed=params.seed,
            logprobs=0,
            skip_special_tokens=False,
        )
        inputs = [{"prompt_token_ids": list(p)} for p in prompts]
        outputs = self.llm.generate(inputs, sp, use_tqdm=False)
        samples = []
        for out in outputs:
            comp = out.outputs[0]
            ids = tuple(comp.token_ids)
            lps = tuple(float(step[t].logprob) for step, t in zip(comp.logprobs or [], ids))
            samples.append(
                Sample(
                    token_ids=ids,
                    logprobs=lps,
                    text=self._tokenizer.decode(list(ids), skip_special_tokens=True),
                    finish_reason="stop" if comp.finish_reason == "stop" else "length",
                )
            )
        return samples

    def score(
        self, sequences: Sequence[Sequence[int]], temperature: float = 1.0
    ) -> list[list[float]]:
        """Log-probs of every token via vLLM's `prompt_logprobs` (position 0 is 0.0)."""
        vllm = self._vllm
        sp = vllm.SamplingParams(max_tokens=1, temperature=temperature, prompt_logprobs=0)
        outputs = self.llm.generate(
            [{"prompt_token_ids": list(s)} for s in sequences], sp, use_tqdm=False
        )
        rows = []
        for seq, out in zip(sequences, outputs):
            plp = out.prompt_logprobs or []
            rows.append([0.0] + [float(plp[i][t].logprob) for i, t in enumerate(seq) if i > 0])
        return rows

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load new weights (Hugging Face parameter names) into the running engine."""
        weights = list(named_tensors)
        apply_model = getattr(self.llm, "apply_model", None)
        if callable(apply_model):
            apply_model(lambda model: model.load_weights(weights))
            return
        executor = self.llm.llm_engine.model_executor  # older vLLM: driver worker in-process
        worker = executor.driver_worker
        runner = getattr(worker, "model_runner", None) or worker.worker.model_runner
        runner.model.load_weights(weights)
        self.llm.reset_prefix_cache()
