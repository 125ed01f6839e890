"""The batched engine under the env: the frozen LLM, its per-row KV cache, the candidate pool and the steered distribution."""
