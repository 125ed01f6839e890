"""The distributional value of prefixes (issue 31): data, head, guidance; see ``agents/value/*.py``."""

VALUE_RULES = ("distribution", "mean")  # how a value guide reads its head: E[u^(N-1)], or E[u]^(N-1)
