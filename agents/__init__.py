"""Agents for proxy_env."""

from proxy_env import _moved

_moved.install()  # agents.bench & co. of the last layout, kept for one release
