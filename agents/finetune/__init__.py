"""The full fine-tune peers: RLHF of the LLM itself with TRL, on the same reward, prompts and evaluation as a proxy.

These are what a practitioner would otherwise pick instead of a proxy; every weight of the LLM is
trained and a KL term towards the frozen model keeps it close (β). Three methods
(``proxy-rlhf finetune --method ...``):

* ``grpo`` (:mod:`.grpo`): online RL on the reward (a plain function), a group of samples per prompt;
  traced over β it is a curve on the reward–KL plot.
* ``dpo`` (:mod:`.dpo`): offline DPO on pairs from ``proxy-rlhf prefs build``, optionally keeping only
  the pairs under a perplexity quantile (or, as the control, as many random pairs).
* ``online-dpo`` (:mod:`.online_dpo`): OAIF, two samples per prompt from the current model and an
  annotator (a reward, a ``rm train`` folder, or an LLM judge) picks one.

TRL and datasets are an optional extra: ``pip install 'proxy-rlhf[finetune]'``.

Prompts are given to TRL in the same format the environment uses: as a one-turn conversation
(the tokenizer's chat template with a generation prompt, as :meth:`proxy_env.engine.lm.FrozenLM.format_prompt`)
when the tokenizer has a template, as plain text otherwise. Sampling uses the env's top-k/top-p/
temperature, so the model at step 0 samples exactly what the always-accept proxy samples.

The final model and tokenizer are written as a plain Hugging Face folder (``from_pretrained``
works) together with ``finetune.json`` and the TensorBoard logs; everything is staged in a hidden
temporary folder that is renamed onto ``out`` at the end, so an interrupted run leaves no
half-written model folder (an existing ``out`` replaced with ``overwrite=True`` is kept until the
new folder is in place). ``finetune.json``'s ``tensorboard_dir`` is relative to the model folder
(``"tensorboard"``, or null without logs): readers resolve it against that folder, so the folder
can be moved. Its ``curve`` and ``point`` say how ``proxy-rlhf bench`` draws the run (one line per
curve, e.g. ``grpo``; a label per point, e.g. ``β=0.1``).
"""

from agents.finetune.common import TrainData, reward_function, time_limit_callback
from agents.finetune.config import METHODS, METRICS_FILE, TENSORBOARD_SUBDIR, FinetuneConfig
from agents.finetune.dpo import PairSelection, select_pairs
from agents.finetune.online_dpo import PairwiseAnnotator, pairwise_reward
from agents.finetune.run import FinetuneResult, finetune

__all__ = [
    "METHODS",
    "METRICS_FILE",
    "TENSORBOARD_SUBDIR",
    "FinetuneConfig",
    "FinetuneResult",
    "PairSelection",
    "PairwiseAnnotator",
    "TrainData",
    "finetune",
    "pairwise_reward",
    "reward_function",
    "select_pairs",
    "time_limit_callback",
]
