"""Reward models from feedback: preference data, perplexity filtering, Bradley–Terry training, AI judges.

* :mod:`~proxy_env.feedback.records` — preference records and their JSONL files (errors name the line).
* :mod:`~proxy_env.feedback.sources` — feedback sources: a reward callable, human labels; :mod:`.judge` the LLM judge.
* :mod:`~proxy_env.feedback.perplexity` — response perplexity under the target LLM and the filter.
* :mod:`~proxy_env.feedback.pairs` — the builder behind ``proxy-rlhf prefs build``.
* :mod:`~proxy_env.feedback.encoders`, :mod:`.rm`, :mod:`.bt` — the Bradley–Terry reward model (``proxy-rlhf rm train``).
* :mod:`~proxy_env.feedback.pairwise` — the online pairwise reward (``reward="pairwise"`` in the env).
"""

from proxy_env.feedback.bt import TrainedRM, train_reward_model
from proxy_env.feedback.encoders import LMEncoder, SentenceEncoder, minilm_dir
from proxy_env.feedback.judge import DEFAULT_TEMPLATE, JudgeStats, LLMJudge
from proxy_env.feedback.pairs import BuildResult, BuildSummary, build_preferences, import_human, sample_responses
from proxy_env.feedback.pairwise import PairwiseJudgeReward
from proxy_env.feedback.perplexity import filter_by_perplexity, perplexities
from proxy_env.feedback.records import PreferencePair, load_pair_files, load_pairs, write_jsonl
from proxy_env.feedback.rm import BTRewardModel, RMTrainConfig, TokenMeanHead, is_reward_model_dir, load_reward_model
from proxy_env.feedback.sources import Preference, RewardFeedback, human_pairs

__all__ = [
    "DEFAULT_TEMPLATE", "BTRewardModel", "BuildResult", "BuildSummary", "JudgeStats", "LLMJudge", "LMEncoder",
    "PairwiseJudgeReward", "Preference", "PreferencePair", "RMTrainConfig", "RewardFeedback", "SentenceEncoder",
    "TokenMeanHead", "TrainedRM", "build_preferences", "filter_by_perplexity", "human_pairs", "import_human", "is_reward_model_dir",
    "load_pair_files", "load_pairs", "load_reward_model", "minilm_dir", "perplexities", "sample_responses", "train_reward_model", "write_jsonl",
]
