"""Text-generation environments: the single env, the native vector env, the tasks, and play() with an engine."""

from criticgym.envs.core import EpisodeState
from criticgym.envs.play import play
from criticgym.envs.tasks import TASKS, FeedbackPrompts, LabelWords, Prompt, Question, Rate, TaskSpec, get_task
from criticgym.envs.text_gen import TextGenEnv
from criticgym.envs.vector import TextGenVectorEnv

__all__ = [
    "TASKS",
    "EpisodeState",
    "FeedbackPrompts",
    "LabelWords",
    "Prompt",
    "Question",
    "Rate",
    "TaskSpec",
    "TextGenEnv",
    "TextGenVectorEnv",
    "get_task",
    "play",
]
