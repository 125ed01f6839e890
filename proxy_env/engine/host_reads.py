"""Count the device-to-host reads an env step would pay on a GPU, on any device (CPU included).

On CUDA each of these blocks the host until the GPU has caught up (a synchronisation): reading a value
(``bool(t)``, ``int(t)``, ``float(t)``, ``.item()``, ``.tolist()``), copying to the host (``.cpu()``,
``.numpy()``, ``np.asarray(t)``), and the operations whose output size depends on the data
(``nonzero``, indexing with a boolean tensor, ``masked_select``, ``unique``). On the CPU they cost
nothing, which is why they are counted, not timed: ``HostReads`` sees every torch call through a
``TorchFunctionMode`` and tallies these by name.

>>> import torch
>>> with HostReads() as reads:
...     x = torch.arange(4)
...     _ = bool((x > 2).any()), x[x > 1], x.tolist()
>>> reads.total, reads.by_name["__bool__"]
(3, 1)
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

# torch calls that read device memory on the host, or whose result size depends on the data
_READS = frozenset(
    {
        "__bool__",
        "__int__",
        "__float__",
        "__index__",
        "item",
        "tolist",
        "cpu",
        "numpy",
        "__array__",
        "nonzero",
        "argwhere",
        "masked_select",
        "unique",
        "unique_consecutive",
        "bincount",
    }
)


class HostReads(TorchFunctionMode):
    """Context manager: ``total`` and ``by_name`` count the host reads made inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.by_name: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.by_name.values())

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        name = getattr(func, "__name__", "")
        if name in _READS:
            self.by_name[name] += 1
        elif name in ("__getitem__", "__setitem__") and len(args) > 1 and _bool_index(args[1]):
            self.by_name[f"{name}[bool]"] += 1
        return func(*args, **(kwargs or {}))


def _bool_index(index: Any) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts)
