"""The batched MDP (:class:`~proxy_env.vector.vector_env.ProxyRLHFVectorEnv`) and what Gymnasium asks of a vector env: infos, seeds, sub-env access, a checker."""
