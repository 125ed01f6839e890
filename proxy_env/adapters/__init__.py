"""The env as other RL libraries take it: an SB3 ``VecEnv`` (:mod:`~proxy_env.adapters.sb3`) and Ray RLlib's env creator (:mod:`~proxy_env.adapters.rllib`)."""
