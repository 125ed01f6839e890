"""``proxy-rlhf train --backend rllib``: the proxy trained by Ray RLlib (config, RLModule, training loop)."""
