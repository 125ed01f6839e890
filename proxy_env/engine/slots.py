"""The key/value buffers under :class:`~proxy_env.engine.row_cache.RowCache`: preallocated, written in place.

Keys and values live in buffers preallocated per layer, ``(B, kv_heads, capacity, head_dim)``: a step writes its
new column in place (:class:`SlotLayer`), so nothing is copied per step. The model attends over a view of the first
``length`` columns, or, with fixed shapes (the GPU's static batch), over the whole buffer with the column index on
the device. Buffers grow by doubling.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from transformers.cache_utils import Cache, DynamicLayer

SLACK = 32  # spare columns allocated beyond what is needed, so growth is rare


class SlotLayer(DynamicLayer):
    """One layer's keys/values in a preallocated buffer; :meth:`update` writes the new columns in place.

    ``keys``/``values`` are views of the first ``length`` columns, which is what the model's attention
    reads and what ``DynamicLayer`` reports as the sequence length.
    """

    keys: torch.Tensor  # never None here: set from the buffers at construction
    values: torch.Tensor

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int) -> None:
        super().__init__()
        self.kbuf, self.vbuf = keys, values  # (B, H, C, D)
        self.length = length
        self.device = keys.device
        self.is_initialized = True
        # fixed shapes (the static batch): attention reads the whole buffer (columns past ``length`` are masked) and
        # a one-token step writes its column at the device index ``column``, so a step's shapes and addresses stay
        # the same from step to step until the buffer grows (what CUDA graphs and torch.compile need)
        self.column: torch.Tensor | None = None
        self._view()

    def _view(self) -> None:
        if self.column is not None:
            self.keys, self.values = self.kbuf, self.vbuf
            return
        self.keys = self.kbuf[:, :, : self.length]
        self.values = self.vbuf[:, :, : self.length]

    def fix_shapes(self, column: torch.Tensor | None) -> None:
        """Attend over the whole buffer and write one-token steps at ``column`` (1,) (None: the growing view)."""
        self.column = column
        self._view()

    @property
    def capacity(self) -> int:
        return int(self.kbuf.shape[2])

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        pass  # buffers exist from construction

    def reserve(self, columns: int) -> None:
        """Make room for ``columns`` columns (doubling, so growth costs O(1) amortised per column)."""
        if columns <= self.capacity:
            return
        capacity = max(columns + SLACK, 2 * self.capacity)
        self.kbuf = regrow(self.kbuf, capacity, self.length)
        self.vbuf = regrow(self.vbuf, capacity, self.length)
        self._view()

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        new = key_states.shape[-2]
        if self.column is not None and new == 1:
            # fixed shapes: the column index lives on the device and RowCache reserved the room and advances
            # ``length`` after the forward, so nothing here depends on a Python number (a compiled step stays valid)
            self.kbuf.index_copy_(2, self.column, key_states)
            self.vbuf.index_copy_(2, self.column, value_states)
            return self.keys, self.values
        self.reserve(self.length + new)
        self.kbuf[:, :, self.length : self.length + new] = key_states  # in place: no copy of the past
        self.vbuf[:, :, self.length : self.length + new] = value_states
        self.length += new
        self._view()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return -1


class SlotCache(Cache):
    """A Hugging Face ``Cache`` of :class:`SlotLayer` s (accepted wherever a ``DynamicCache`` is)."""

    def __init__(self, layers: list[SlotLayer]) -> None:
        # the cache keeps this very list (RowCache fills it in place), so it is cast, not copied, to Cache's wider type
        super().__init__(layers=cast("list[Any]", layers))


def layer_kv(layer: object) -> tuple[torch.Tensor, torch.Tensor]:
    """The keys and values of a filled ``DynamicCache`` layer (transformers types them as optional)."""
    keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
    assert isinstance(keys, torch.Tensor) and isinstance(values, torch.Tensor), f"{type(layer).__name__} holds no keys"
    return keys, values


def regrow(buf: torch.Tensor, capacity: int, length: int, offset: int = 0) -> torch.Tensor:
    """A zeroed buffer of ``capacity`` columns holding ``buf``'s first ``length`` columns at ``offset``."""
    b, h, _, d = buf.shape
    out = buf.new_zeros(b, h, capacity, d)
    out[:, :, offset : offset + length] = buf[:, :, :length]
    return out


def regrow_mask(mask: torch.Tensor, capacity: int, length: int, offset: int = 0) -> torch.Tensor:
    """:func:`_regrow` for the (B, C) attention-mask buffer."""
    return regrow(mask[:, None, :, None], capacity, length, offset)[:, 0, :, 0]


def gather_rows(buf: torch.Tensor, index: torch.Tensor, length: int) -> torch.Tensor:
    """Rows ``index`` of ``buf``'s first ``length`` columns plus one spare column, in a fresh buffer.

    One ``index_select`` copy (4x faster on the CPU than a zeroed buffer filled by advanced
    indexing). The spare column is ``buf``'s column ``length``, zero by the cache's invariant; the
    sub-batch step overwrites it anyway.
    """
    return buf[:, :, : length + 1].index_select(0, index)
