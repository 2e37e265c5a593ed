"""The typed reward spec: one parser of the string forms, its errors, its round trip, and one meaning everywhere."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest

import criticgym
from criticgym.errors import ConfigError
from criticgym.rewards import (
    DEFAULT_MODEL,
    Relc,
    RlaifDirect,
    RlaifPairwise,
    Sparse,
    as_dict,
    from_dict,
    reward_spec,
    spec_name,
)
from criticgym.train.config import TrainConfig, config_changes, upgraded


@pytest.mark.parametrize(
    "form, spec",
    [
        ("sparse", Sparse()),
        ("relc", Relc()),
        ("relc-lexicon", Relc(critic="lexicon")),
        ("random", Relc(critic="random")),
        ("random-toxicity", Relc(critic="random-toxicity")),
        ("rlaif-direct", RlaifDirect()),
        ("rlaif-pairwise", RlaifPairwise()),
    ],
)
def test_every_string_form_parses_into_its_spec_and_back_to_its_name(form, spec):
    assert reward_spec(form) == spec
    assert spec_name(spec) == form
    assert from_dict(as_dict(spec)) == spec


def test_options_set_fields_and_a_spec_passes_through():
    assert reward_spec("relc", critic="llm", alpha2=0.5) == Relc(critic="llm", alpha2=0.5)
    assert reward_spec(Relc(critic="llm"), alpha1=2.0) == Relc(critic="llm", alpha1=2.0)
    assert reward_spec(None) is None
    assert RlaifDirect().judge_model == DEFAULT_MODEL == Relc().critic_model


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: reward_spec("dense"),
            r"Unknown reward set-up 'dense'; use one of \['sparse', 'relc', 'relc-<",
        ),
        (lambda: reward_spec("sparse", critic="lexicon"), "'critic' is not an option of the sparse reward.*to relc"),
        (lambda: reward_spec("relc", judge_model="x"), "belongs to rlaif-direct and rlaif-pairwise"),
        (lambda: reward_spec("relc", colour="red"), r"'colour' is not an option of the relc reward \(its options"),
        (lambda: reward_spec("relc-lexicon", critic="llm"), "names the critic 'lexicon'; drop critic='llm'"),
        (lambda: reward_spec(None, alpha1=1.0), "takes no reward options"),
        (lambda: reward_spec(3), "reward must be a reward spec"),
        (lambda: from_dict({"critic": "lexicon"}), "needs a kind"),
    ],
)
def test_bad_reward_input_names_the_fix(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def test_gym_make_takes_a_spec_or_its_string_form_with_the_same_rewards():
    def returns(**reward):
        env = gym.make("criticgym/SentimentControl-v0", max_new_tokens=3, **reward)
        env.reset(seed=0, options={"prompt": "The film was"})
        ids = env.unwrapped.tokenizer.encode(" dull and bad", add_special_tokens=False)[:3]
        return [env.step(token)[1] for token in ids]

    by_spec = returns(reward=Relc(critic="lexicon", alpha2=0.5), scorer="vader")
    by_string = returns(reward="relc", critic="lexicon", alpha2=0.5, scorer="vader")
    np.testing.assert_array_equal(by_spec, by_string)
    assert min(by_spec) < 0  # the lexicon critic marks a negative span


def test_objects_go_where_the_spec_has_their_role():
    with pytest.raises(ConfigError, match="critic= is given, but the sparse reward has no critic; it belongs to relc"):
        gym.make("criticgym/SentimentControl-v0", reward="sparse", critic=object())
    with pytest.raises(ConfigError, match="judge= is given.*relc-lexicon reward has no judge"):
        gym.make("criticgym/SentimentControl-v0", reward="relc-lexicon", judge=object())
    with pytest.raises(ConfigError, match="needs a DirectJudge"):
        gym.make("criticgym/SentimentControl-v0", reward="rlaif-direct", judge=object())
    with pytest.raises(ConfigError, match="need the vector env"):
        gym.make("criticgym/SentimentControl-v0", reward=RlaifPairwise())
    with pytest.raises(ConfigError, match="a scorer's score is already a direct reward"):
        gym.make("criticgym/SentimentControl-v0", reward=RlaifDirect(judge_model="vader"))


def test_a_run_config_holds_its_spec_and_reads_older_flat_configs():
    cfg = TrainConfig(reward=Relc(critic="lexicon", alpha2=0.5))
    assert TrainConfig.from_dict(cfg.__dict__ | {"reward": as_dict(cfg.reward)}) == cfg
    older = {"reward": "relc", "critic": "lexicon", "alpha2": 0.5, "judge_model": "x", "critic_model": DEFAULT_MODEL}
    assert upgraded(older)["reward"] == as_dict(Relc(critic="lexicon", alpha2=0.5))
    assert TrainConfig.from_dict(older).reward == cfg.reward
    assert TrainConfig(reward="rlaif-direct").reward == RlaifDirect()
    with pytest.raises(ConfigError, match="needs a reward"):
        TrainConfig(reward=None)


def test_run_configs_differ_by_reward_kind_in_one_line_and_by_option_in_its_own():
    def config(reward):
        return {"reward": as_dict(reward)}

    assert config_changes(config(Sparse()), config(Relc(critic="lexicon"))) == ["reward ('sparse' -> 'relc-lexicon')"]
    assert config_changes(config(Relc(alpha2=1.0)), config(Relc(alpha2=0.5))) == ["reward.alpha2 (1.0 -> 0.5)"]
    older = {"reward": "relc", "alpha2": 1.0}
    assert config_changes(older, config(Relc(alpha2=1.0))) == []


def test_the_command_line_shows_only_the_chosen_rewards_options(capsys):
    from criticgym.train.driver import config_from_args

    cfg = config_from_args(["--iterations", "3", "relc", "--critic", "lexicon", "--alpha2", "0.5"])
    assert cfg.iterations == 3 and cfg.reward == Relc(critic="lexicon", alpha2=0.5)
    assert config_from_args(["rlaif-pairwise", "--judge-model", "label:self"]).reward == RlaifPairwise("label:self")
    with pytest.raises(SystemExit):
        config_from_args(["sparse", "--help"])
    text = capsys.readouterr().out
    assert "--scorer" in text and "--critic" not in text and "--judge-model" not in text and "--kind" not in text


def test_import_criticgym_still_registers_every_id():
    assert all(env_id in gym.registry for env_id in criticgym.ENV_IDS)


@pytest.mark.parametrize(
    ("form", "spec"),
    [
        ("sparse", Sparse()),
        ("relc-lexicon", Relc(critic="lexicon")),
        ("random-toxicity", Relc(critic="random-toxicity")),
        ("rlaif-pairwise", RlaifPairwise()),
    ],
)
def test_a_reward_is_written_one_way_in_every_command(form, spec):
    """``--reward FORM`` in train, demo and eval; an arm of the bench commands is the same FORM."""
    from criticgym.bench.ablation import arm_reward
    from criticgym.cli.train import eval_config
    from criticgym.train.driver import config_from_args

    assert config_from_args(["--iterations", "3", "--reward", form]).reward == spec
    assert config_from_args([f"--reward={form}"], prog="criticgym demo").reward == spec
    assert eval_config(["--model", "tiny", "--reward", form]).reward == spec
    assert arm_reward(form) == spec


def test_the_rewards_options_go_anywhere_after_reward_and_the_subcommand_form_still_works():
    from criticgym.cli.train import eval_config
    from criticgym.train.config import reward_args
    from criticgym.train.driver import config_from_args

    argv = ["--reward", "relc-lexicon", "--alpha2", "0.5", "--iterations", "3", "--critic-model=tiny"]
    assert reward_args(argv, "criticgym train") == [
        "--iterations", "3", "relc", "--critic", "lexicon", "--alpha2", "0.5", "--critic-model=tiny"
    ]  # fmt: skip
    cfg = config_from_args(argv)
    assert cfg.iterations == 3 and cfg.reward == Relc(critic="lexicon", alpha2=0.5, critic_model="tiny")
    assert config_from_args(["--iterations", "3", "relc", "--critic", "lexicon", "--alpha2", "0.5"]).reward == Relc(
        critic="lexicon", alpha2=0.5
    )
    assert eval_config(["relc", "--critic", "toxicity"]).reward == Relc(critic="toxicity")
    # an option two set-ups share is each one's (it was refused as the other's)
    assert config_from_args(["sparse", "--scorer", "vader"]).reward == Sparse(scorer="vader")
    judged = eval_config(["--reward", "rlaif-direct", "--judge-model", "label:self", "--prompts", "4"])
    assert judged.prompts == 4 and judged.reward == RlaifDirect(judge_model="label:self")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--reward", "relc-lexicon", "--critic", "llm"],
            "--reward relc-lexicon names the critic lexicon; drop --critic",
        ),
        (["--reward", "sparse", "--alpha2", "0.5"], "--alpha2 is an option of the relc reward, not of sparse"),
        (["--reward", "sparse", "--reward", "relc"], "Give the reward once, as --reward FORM with its options"),
        (["--reward"], "Give the reward once, as --reward FORM"),
        (["--reward", "rlaif-direct", "sparse"], "The reward is given twice, as --reward rlaif-direct and as the"),
    ],
)
def test_a_reward_written_twice_or_with_anothers_options_names_the_line_that_works(argv, message):
    from criticgym.train.driver import config_from_args

    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_args(argv)
