"""Agents for proxy_env: training backends, baselines, evaluation, saving and the ``proxy-rlhf`` command."""
