"""The alignment tasks: one registered env id each, the same MDP and settings, a different prompt set and reward.

A task is three names the env already takes: its training prompts (``prompts=``), its held-out
prompts (what ``bench``/``leaderboard`` evaluate on) and its reward (``reward=``). Its env id is
registered with those two keyword arguments and nothing else, so every setting of
:class:`~proxy_env.config.EnvConfig` (and an override of the prompts or the reward) applies as for
``proxy_env/ProxyRLHF-v1``.

>>> [t.env_id for t in TASKS.values()]
['proxy_env/Sentiment-v0', 'proxy_env/Instructions-v0', 'proxy_env/Relevance-v0', 'proxy_env/CivilRelevance-v0']
>>> get_task("proxy_env/Relevance-v0").eval_prompts
'relevance-eval'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy_env.errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class Task:
    """One alignment task: the names of its prompt sets and reward, and what it asks of a proxy."""

    name: str
    env_id: str
    prompts: str  # the training prompts (a name load_prompts takes)
    eval_prompts: str  # the held-out prompts
    reward: str  # a name resolve_reward takes
    reward_range: tuple[float, float]
    what: str  # the task in one sentence
    hard: str  # what makes it hard for a proxy that accepts or rejects one token at a time

    @property
    def env_kwargs(self) -> dict[str, Any]:
        """The keyword arguments its env id is registered with."""
        return {"prompts": self.prompts, "reward": self.reward}


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task(
            "sentiment",
            "proxy_env/Sentiment-v0",
            "default",
            "default-eval",
            "vader",
            (-1.0, 1.0),
            "the paper's task: VADER's compound positivity of the reply to a chatterbot user turn "
            "(637 train / 266 held-out turns)",
            "little: a lexicon scores words, so most of a token's effect on the reward is visible when it is "
            "offered (myopic rules do well); reward hacking (a string of positive words) is the risk",
        ),
        Task(
            "instructions",
            "proxy_env/Instructions-v0",
            "instructions",
            "instructions-eval",
            "instructions",
            (0.0, 1.0),
            "instruction following with verifiable rewards: each turn carries one or two IFEval instructions "
            "(lm-eval's registry writes and checks them); reward = the fraction followed (637 / 266 prompts)",
            "mixed: some instructions are myopic (no commas, lowercase, a forbidden word: reject the tokens that "
            "break them), others need lookahead (end with a phrase, add a P.S., reach a word count, a title) "
            "within the response budget",
        ),
        Task(
            "relevance",
            "proxy_env/Relevance-v0",
            "relevance",
            "relevance-eval",
            "relevance",
            (-1.0, 1.0),
            "reference relevance: cosine similarity under all-MiniLM-L6-v2 between the reply and the corpus's "
            "closest reference reply to the turn (605 / 257 turns)",
            "semantic and whole-response: no single token decides it, so a myopic rule sees little and a value "
            "of the prefix must carry it",
        ),
        Task(
            "civil-relevance",
            "proxy_env/CivilRelevance-v0",
            "relevance",
            "relevance-eval",
            "relevance-civil",
            (-2.0, 1.0),
            "a composite reward − cost: reference relevance minus VADER's negativity (a harm cost that pays "
            "nothing for positivity), on the relevance turns",
            "two sources that pull apart: avoiding hostile words is myopic, staying on topic is not; a proxy "
            "that only avoids the cost gains little",
        ),
    )
}

PROMPT_SETS = ("instructions", "instructions-eval", "relevance", "relevance-eval")  # besides the default ones
REWARDS = ("instructions", "relevance", "relevance-civil")  # besides VADER ("vader"/"default") and the others


def get_task(name: str) -> Task:
    """A task by name (``"relevance"``) or env id (``"proxy_env/Relevance-v0"``)."""
    for task in TASKS.values():
        if name in (task.name, task.env_id):
            return task
    raise ConfigError(f"task={name!r} is not a task; expected one of {list(TASKS)}." + did_you_mean(name, TASKS))


def prompt_set(name: str) -> list[str]:
    """The prompts of the task prompt set ``name`` (one of :data:`PROMPT_SETS`)."""
    if name not in PROMPT_SETS:
        raise ConfigError(f"prompts={name!r} is not a task prompt set; expected one of {list(PROMPT_SETS)}.")
    held_out = name.endswith("-eval")
    if name.startswith("instructions"):
        from proxy_env.tasks import instructions

        return instructions.prompt_set(held_out)
    from proxy_env.tasks import relevance

    return relevance.prompt_set(held_out)


def task_reward(name: str, *, device: Any = None) -> Any:
    """The reward source named ``name`` (one of :data:`REWARDS`)."""
    if name == "instructions":
        from proxy_env.tasks.instructions import InstructionReward

        return InstructionReward()
    if name == "relevance":
        from proxy_env.tasks.relevance import RelevanceReward

        return RelevanceReward(device=device)
    if name == "relevance-civil":
        from proxy_env.tasks.relevance import CivilRelevance

        return CivilRelevance(device=device)
    raise ConfigError(f"reward={name!r} is not a task reward; expected one of {list(REWARDS)}.")


def task_table(indent: str = "") -> str:
    """The markdown table of the tasks (the env docstring's): id, prompts, reward and its range, what is hard."""
    lines = [
        "| env id | prompts (train / held out) | reward, range | what makes it hard |",
        "|---|---|---|---|",
    ]
    for t in TASKS.values():
        low, high = t.reward_range
        lines.append(
            f"| ``{t.env_id}`` | ``{t.prompts}`` / ``{t.eval_prompts}`` | ``{t.reward}``: {t.what}; "
            f"[{low:g}, {high:g}] | {t.hard} |"
        )
    return ("\n" + indent).join(lines)
