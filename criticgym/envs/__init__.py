"""Text-generation environments: the single env, the native vector env, the tasks, and play() with an engine."""

from criticgym.envs.core import EpisodeState, draw_prompts
from criticgym.envs.play import EnvRollouts, RolloutSource, play, play_rows
from criticgym.envs.replay import VLLMRollouts, replay
from criticgym.envs.tasks import TASKS, FeedbackPrompts, LabelWords, Prompt, Question, Rate, TaskSpec, get_task
from criticgym.envs.text_gen import TextGenEnv
from criticgym.envs.vector import TextGenVectorEnv

__all__ = [
    "TASKS",
    "EnvRollouts",
    "EpisodeState",
    "FeedbackPrompts",
    "LabelWords",
    "Prompt",
    "Question",
    "Rate",
    "RolloutSource",
    "VLLMRollouts",
    "TaskSpec",
    "TextGenEnv",
    "TextGenVectorEnv",
    "draw_prompts",
    "get_task",
    "play",
    "play_rows",
    "replay",
]
