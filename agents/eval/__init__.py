"""``proxy-rlhf bench`` and the measures under it: the exact KL of a steered sampler, best-of-N, metrics, paired comparisons."""
