"""Text-generation environments: the single env, the native vector env and the tasks.

How an engine plays them (``play``, ``EnvRollouts``, vLLM's replay, Ray workers) is :mod:`criticgym.sources`.
"""

from criticgym.envs.core import EpisodeState, draw_prompts
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
    "draw_prompts",
    "get_task",
]
