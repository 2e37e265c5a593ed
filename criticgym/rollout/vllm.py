"""vLLM as the sampler of a rollout: the engine GPU users pick, with the policy's weights synced in place.

:class:`VLLMSampler` only samples token ids (and the log-probs vLLM reports for them) from token-id prompts with
our sampling settings: temperature, top-k, top-p, one seed per row, a token budget and the stop tokens the caller
names (an env's EOS set). Everything else about a batch (the env's steps and rewards, the learner's log-probs and
values) comes from replaying those tokens (:class:`criticgym.sources.VLLMRollouts`,
:meth:`~criticgym.rollout.RolloutEngine.replay`). Nothing here rewinds: RAIN and anything else that forks or crops
a KV cache keeps :class:`~criticgym.rollout.RolloutEngine`.

:meth:`VLLMSampler.sync` brings the learner's weights to the engine without restarting it: a full-weight policy
through vLLM's ``reload_weights`` (Hugging Face names; after the first sync only the trainable tensors), a LoRA
policy as a new LoRA request holding the adapter alone (the base is never merged). Both reset vLLM's prefix cache,
whose entries were computed with the old weights.

vLLM is an optional dependency with its own pins: ``make test-vllm`` builds its venv from
``requirements-vllm.lock`` (vLLM's CPU build). vLLM's CPU attention needs heads of at least 32 dimensions, so the
tests use the built-in ``tiny-vllm``.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from criticgym.errors import ConfigError
from criticgym.rollout.models import model_folder
from criticgym.rollout.sampling import SamplingParams

# LoRA ranks a vLLM engine is sized for: the smallest of these at least the adapter's rank
_LORA_RANKS = (8, 16, 32, 64, 128, 256, 512)


class Sampled(NamedTuple):
    """One completion per prompt: its token ids and the log-prob vLLM reported for each (the filtered distribution)."""

    tokens: list[list[int]]
    logprobs: list[list[float]]


def require_vllm():
    """The ``vllm`` module, or an error that says how to install it."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in this process: weights reach it by reference
    try:
        import vllm
    except ImportError as exc:
        raise ConfigError(
            "The vLLM engine needs vLLM: `pip install vllm` on a GPU machine, or `make test-vllm`, which builds "
            f"a venv with vLLM's CPU build (.venv-vllm). ({exc})"
        ) from exc
    return vllm


class VLLMSampler:
    """A vLLM engine in this process that samples completions of token-id prompts.

    Args:
        model: a built-in name (``tiny-vllm``, ``smollm2-135m``), a folder or a hub id: the weights it starts from
            (the first :meth:`sync` replaces them all with the learner's).
        lora_rank: the rank of the LoRA adapter the policy trains (0: a full-weight policy).
        seed: the engine's seed (each row's sampling is seeded by its own seed in :meth:`sample`).
        dtype: vLLM's dtype; None: float32 on the CPU (the learner's), bfloat16 on CUDA.
        kv_cache_bytes: the KV cache vLLM reserves (None: 1 GiB on the CPU; on CUDA ``gpu_memory_utilization``).
        gpu_memory_utilization: the fraction of GPU memory vLLM takes on CUDA (the learner shares the GPU).
        engine_args: anything else for ``vllm.LLM``.
    """

    def __init__(
        self,
        model: str,
        *,
        lora_rank: int = 0,
        seed: int = 0,
        dtype: str | None = None,
        kv_cache_bytes: int | None = None,
        gpu_memory_utilization: float = 0.3,
        **engine_args: Any,
    ) -> None:
        vllm = require_vllm()
        on_cuda = torch.cuda.is_available()
        args: dict[str, Any] = {
            "model": model_folder(model),
            "dtype": dtype or ("bfloat16" if on_cuda else "float32"),
            "seed": seed,
            "enforce_eager": True,  # graphs compile for minutes; weights change every iteration anyway
            "logprobs_mode": "processed_logprobs",  # of the tempered, filtered distribution, as our sampler reports
        }
        if on_cuda and kv_cache_bytes is None:
            args["gpu_memory_utilization"] = gpu_memory_utilization
        else:
            args["kv_cache_memory_bytes"] = kv_cache_bytes or 1 << 30
        if lora_rank:
            rank = next((r for r in _LORA_RANKS if r >= lora_rank), None)
            if rank is None:
                raise ConfigError(f"vLLM serves LoRA ranks up to {_LORA_RANKS[-1]}; got {lora_rank}.")
            args.update(enable_lora=True, max_lora_rank=rank, max_loras=1)
        self.llm = vllm.LLM(**args, **engine_args)
        self.lora_rank = lora_rank
        self._lora = None  # the LoRA request of the synced adapter
        self._adapters = tempfile.TemporaryDirectory(prefix="criticgym-lora-") if lora_rank else None
        self._synced = False
        self.syncs = 0

    def sample(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        *,
        seeds: Sequence[int],
        stop_ids: Sequence[int],
        sampling: SamplingParams = SamplingParams(),
    ) -> Sampled:
        """One completion per prompt; a row ends at one of ``stop_ids`` (kept in its tokens) or after the budget.

        The model's own EOS ends a row only when it is among ``stop_ids``: the caller's stop set is the only one.
        """
        import vllm
        from vllm.inputs import TokensPrompt

        if len(seeds) != len(prompts):
            raise ConfigError(f"Got {len(seeds)} seeds for {len(prompts)} prompts; give one seed per prompt.")
        greedy = sampling.greedy
        params = [
            vllm.SamplingParams(
                max_tokens=max_new_tokens,
                min_tokens=sampling.min_new_tokens,
                temperature=0.0 if greedy else sampling.temperature,
                top_k=0 if greedy else sampling.top_k,
                top_p=1.0 if greedy else sampling.top_p,
                seed=int(seed),
                stop_token_ids=list(stop_ids),
                ignore_eos=True,
                logprobs=0,  # the sampled token's own log-prob
                detokenize=False,
            )
            for seed in seeds
        ]
        inputs = [TokensPrompt(prompt_token_ids=list(p)) for p in prompts]
        outputs = self.llm.generate(inputs, params, use_tqdm=False, lora_request=self._lora)
        tokens, logprobs = [], []
        for output in outputs:
            completion = output.outputs[0]
            tokens.append(list(completion.token_ids))
            logprobs.append([next(iter(step.values())).logprob for step in completion.logprobs])
        return Sampled(tokens, logprobs)

    def sync(self, model) -> float:
        """Bring ``model``'s current weights to the engine; returns the seconds it took.

        A LoRA policy (peft) sends its adapter alone, as a new LoRA request; a full-weight one its tensors under their
        Hugging Face names (all of them the first time, then the trainable ones: frozen layers never change).
        """
        start = time.perf_counter()
        if _is_peft(model):
            self._sync_adapter(model)
        else:
            # by storage, not by name: a tied lm_head is the embedding under a second name, and vLLM must get both
            trainable = {p.data_ptr() for p in model.parameters() if p.requires_grad}
            weights = [
                (name, tensor.detach())
                for name, tensor in model.state_dict().items()
                if not self._synced or tensor.data_ptr() in trainable
            ]
            self.llm.collective_rpc(
                "reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True}
            )
        self.llm.reset_prefix_cache()
        self._synced = True
        self.syncs += 1
        return time.perf_counter() - start

    def _sync_adapter(self, model) -> None:
        from vllm.lora.request import LoRARequest

        if self._adapters is None:
            raise ConfigError("This vLLM engine was built for a full-weight policy; make it with lora_rank=r.")
        folder = os.path.join(self._adapters.name, f"v{self.syncs + 1}")
        model.save_pretrained(folder)
        if self._lora is not None:
            self.llm.llm_engine.remove_lora(self._lora.lora_int_id)
        self._lora = LoRARequest(f"policy-v{self.syncs + 1}", self.syncs + 1, folder)


def _is_peft(model) -> bool:
    """Whether ``model`` is a peft model (its adapter is what trains)."""
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)
