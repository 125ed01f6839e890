"""Preference data and reward-model training: what turns feedback into a reward the env can load.

* :mod:`~feedback.records` — preference records and their JSONL files (errors name the line).
* :mod:`~feedback.sources` — feedback sources: a reward callable, human labels, the LLM judge
  (:class:`~proxy_env.rewards.judge.LLMJudge`) and its agreement with labelled pairs.
* :mod:`~feedback.perplexity` — response perplexity under the target LLM and the filter.
* :mod:`~feedback.pairs` — the builder behind ``proxy-rlhf prefs build``.
* :mod:`~feedback.rm` and :mod:`~feedback.bt` — training a Bradley–Terry reward model (``proxy-rlhf rm train``).

The trained model itself, its encoders and the judge live with the other reward sources in
:mod:`proxy_env.rewards` (the env loads them; it never imports this package), and are imported from there.
"""

from feedback.bt import TrainedRM, train_reward_model
from feedback.pairs import BuildResult, BuildSummary, build_preferences, import_human, sample_responses
from feedback.perplexity import filter_by_perplexity, perplexities
from feedback.records import PreferencePair, load_pair_files, load_pairs, write_jsonl
from feedback.rm import RMTrainConfig
from feedback.sources import Preference, RewardFeedback, human_pairs, judge_agreement

__all__ = [
    "BuildResult",
    "BuildSummary",
    "Preference",
    "PreferencePair",
    "RMTrainConfig",
    "RewardFeedback",
    "TrainedRM",
    "build_preferences",
    "filter_by_perplexity",
    "human_pairs",
    "import_human",
    "judge_agreement",
    "load_pair_files",
    "load_pairs",
    "perplexities",
    "sample_responses",
    "train_reward_model",
    "write_jsonl",
]
