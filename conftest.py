"""Collection for the doctest run over the packages: modules that subclass an optional dependency need it installed."""

import importlib.util

# agents/rllib/module.py subclasses RLlib's TorchRLModule, so importing it needs Ray (pip install -e '.[rllib]')
collect_ignore = [] if importlib.util.find_spec("ray") else ["agents/rllib/module.py"]
