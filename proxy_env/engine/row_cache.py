"""The per-row KV-cache engine under the batched env: rows stepped, committed, discarded and refilled independently.

:class:`RowCache` runs batched one-token steps whose rows are independent: each row can be
prefilled with a new prompt, step one tentative token, then commit it or discard it, without
touching the other rows. It relies on transformers' ``DynamicCache`` layers holding ``(batch, kv_heads,
time, head_dim)`` keys and values that can be written in place, and on an explicit 2D attention mask and
per-row ``position_ids`` for left-padded one-token steps (checked to ~1e-6 against a full forward by
``tests/test_row_cache.py``).

Keys and values live in buffers preallocated per layer (:mod:`proxy_env.engine.slots`), written in place. The
model attends over a view of the first ``length`` columns; buffers grow by doubling and shrink at compaction, so
memory stays bounded by the longest live sequence. On a GPU the cache steps a *static batch* (every row every step,
attention over the whole buffer under a 4-D mask, the column index on the device): fixed shapes and addresses,
and nothing read back on the host per step (:attr:`RowCache.static_batch`, :func:`compile_decode_step`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch

from proxy_env.engine.outputs import StepOutput
from proxy_env.engine.slots import SLACK, SlotCache, SlotLayer, gather_rows, layer_kv, regrow, regrow_mask

if TYPE_CHECKING:
    from proxy_env.engine.lm import FrozenLM

# Invariant checks read tensors back to the host (a GPU sync each): on only when asked for.
CHECKS = os.environ.get("PROXY_ENV_CHECKS", "") not in ("", "0")


class RowCache:
    """A batched KV cache whose rows are committed, discarded and refilled independently.

    Layout: every layer holds keys/values of shape (B, kv_heads, L, head_dim) (views of preallocated
    buffers); ``mask`` (B, L) marks which columns each row attends to; ``pos`` (B,) is each row's
    next position id. A stepped token is *pending* until :meth:`commit` (keep, advance the position)
    or :meth:`discard` (mask its column out, keep the position). :meth:`compact` right-aligns each
    row's live columns, so the length stays bounded by the longest live sequence, not by the number
    of steps taken. Columns past ``length`` are always zero, so a column a row never wrote is finite.
    """

    def __init__(self, lm: FrozenLM, num_rows: int, hidden_layer: int = -1) -> None:
        self.lm = lm
        self.num_rows = num_rows
        self.hidden_layer = hidden_layer
        device = lm.device
        self.layers: list[SlotLayer] = []  # built at the first reset_rows, from the model's own shapes
        self.length = 0
        self._mask = torch.zeros(num_rows, SLACK, dtype=torch.long, device=device)  # (B, C) mask buffer
        self.pos = torch.zeros(num_rows, dtype=torch.long, device=device)  # (B,)
        self.pending = torch.full((num_rows,), -1, dtype=torch.long, device=device)  # (B,) column or -1
        # Above this share of active rows, step every row (inactive ones masked) instead of a sub-batch.
        # On the CPU a forward costs a fixed weight read plus a cost per row, and gathering a sub-batch
        # is cheap (bench_env.py: 0.83x vs 0.73x the bare forward at 32 envs, prefix+forced_steps), so
        # only a full batch steps densely. On a GPU a forward's cost barely grows with its rows, and a
        # sub-batch needs its size on the host (a synchronisation) and changes the step's shapes: there
        # every step feeds every row (0.0, :attr:`static_batch`).
        static = lm.static_batch if lm.static_batch is not None else torch.device(device).type != "cpu"
        self.dense_fraction = 0.0 if static else 1.0
        self._next_compact_check = 0  # compact() reads the live width back only once length reaches this
        self._columns: dict[torch.device, torch.Tensor] = {}  # static batch: the step's column index, per device
        # what a static batch's one-token step calls instead of the model (None: the model): the compiled model of
        # compile_decode_step; only those steps have fixed shapes, prefills keep calling the model itself
        self.step_model: Any = lm.decode_step_model
        self.forwards = 0  # batched model calls made (full batch or sub-batch)
        self.row_forwards = 0  # rows fed through the model, summed over calls
        self.prefix_tokens_reused = 0  # prompt tokens not fed at prefill: the shared prefix's keys/values were reused
        self._prefix: tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]] | None = None  # built at first use

    @property
    def static_batch(self) -> bool:
        """Every step feeds every row (inactive ones masked): fixed batch shape, no row count read on the host."""
        return self.dense_fraction <= 0.0

    @property
    def mask(self) -> torch.Tensor:
        """(B, L) attention mask over the cached columns."""
        return self._mask[:, : self.length]

    @property
    def cache(self) -> SlotCache:
        return SlotCache(self.layers)

    def _forward(
        self, input_ids: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor, cache: Any, model: Any = None
    ) -> StepOutput:
        self.forwards += 1
        self.row_forwards += int(input_ids.shape[0])
        out = (self.lm.model if model is None else model)(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=position_ids,
            use_cache=True,
            output_hidden_states=True,
            **self.lm.cache_kwargs(cache),
        )
        device = self.lm.device  # a model spread over devices (device_map) returns its last layers' outputs elsewhere
        return StepOutput(
            out.hidden_states[self.hidden_layer][:, -1].float().to(device), out.logits[:, -1].float().to(device)
        )

    def _reserve(self, columns: int) -> None:
        for layer in self.layers:
            layer.reserve(columns)
        if columns > self._mask.shape[1]:
            self._mask = regrow_mask(self._mask, max(columns + SLACK, 2 * self._mask.shape[1]), self.length)

    @torch.no_grad()
    def reset_rows(self, rows: torch.Tensor, prompts: list[list[int]]) -> StepOutput:
        """Prefill ``prompts`` into the rows selected by bool mask ``rows`` (B,); other rows untouched.

        Returns the hidden state and next-token logits at each prompt's last token, (n, H) and (n, V).
        """
        from transformers import DynamicCache

        index = rows.nonzero().squeeze(1)
        assert len(index) == len(prompts) > 0, "one prompt per selected row"
        prefix, prefix_kv = self._shared_prefix()
        k = len(prefix)
        fresh = DynamicCache()
        if k and all(len(p) > k and p[:k] == prefix for p in prompts):
            # Every prompt starts with the chat template's fixed head: its keys/values are computed once
            # and reused, and only the rest of each prompt is fed (left-padded after the head, masked).
            n = len(prompts)
            ids, tail_mask = self.lm.left_pad([p[k:] for p in prompts])  # (n, P - k)
            pmask = torch.cat([tail_mask.new_ones(n, k), tail_mask], 1)  # (n, P)
            for i, (keys, values) in enumerate(prefix_kv):
                fresh.update(keys.expand(n, -1, -1, -1), values.expand(n, -1, -1, -1), i)  # update copies them
            self.prefix_tokens_reused += n * k
        else:
            ids, pmask = self.lm.left_pad(prompts)  # (n, P)
        width = pmask.shape[1]
        position_ids = (pmask.cumsum(-1) - 1).clamp(min=0)[:, width - ids.shape[1] :]  # (n, ids width)
        out = self._forward(ids, pmask, position_ids, fresh)
        if not self.layers:
            self._init_layers(fresh)
        if self.length < width:
            self._pad_left(width - self.length)
        start = self.length - width
        for layer, new in zip(self.layers, fresh.layers):
            new_keys, new_values = layer_kv(new)
            index = index.to(layer.device)  # each layer's buffers live on its layer's device (device_map)
            layer.kbuf[index, :, : self.length] = 0.0  # clears what the row held before
            layer.vbuf[index, :, : self.length] = 0.0
            layer.kbuf[index, :, start : self.length] = new_keys
            layer.vbuf[index, :, start : self.length] = new_values
        index = index.to(self._mask.device)
        self._mask[index, : self.length] = 0
        self._mask[index, start : self.length] = pmask
        self.pos[index] = pmask.sum(-1)
        self.pending[index] = -1
        return out

    def _shared_prefix(self) -> tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]]:
        """The tokens every templated prompt starts with, and their keys/values per layer (batch 1).

        Empty without a chat template. A causal LM's keys/values of a prefix depend on the prefix
        alone, so reusing them is exact up to float rounding (a batch-1 forward rounds differently
        from a batched one: outputs move in the last bits against a full prefill, and a seeded run
        is not bit-identical to one before this reuse). :meth:`reset_rows` checks each prompt's
        tokens against it. Its one forward counts in :attr:`forwards`.
        """
        if self._prefix is None:
            from transformers import DynamicCache

            prefix = self.lm.template_prefix()
            kv: list[tuple[torch.Tensor, torch.Tensor]] = []
            if prefix:
                cache = DynamicCache()
                ids = torch.tensor([prefix], dtype=torch.long, device=self.lm.device)
                self.forwards += 1
                self.row_forwards += 1
                self.lm.model(input_ids=ids, use_cache=True, **self.lm.cache_kwargs(cache))
                kv = [layer_kv(layer) for layer in cache.layers]
            self._prefix = (prefix, kv)
        return self._prefix

    def _init_layers(self, like: Any) -> None:
        for new in like.layers:
            _b, h, _, d = new.keys.shape
            keys = new.keys.new_zeros(self.num_rows, h, SLACK, d)
            values = new.values.new_zeros(self.num_rows, h, SLACK, new.values.shape[3])
            self.layers.append(SlotLayer(keys, values, 0))

    def _pad_left(self, n: int) -> None:
        """Shift every row right by ``n`` empty columns (a prompt longer than the cache arrived)."""
        length = self.length + n
        for layer in self.layers:
            capacity = max(layer.capacity, length + SLACK)
            layer.kbuf = regrow(layer.kbuf, capacity, self.length, offset=n)
            layer.vbuf = regrow(layer.vbuf, capacity, self.length, offset=n)
            layer.length = length
            layer._view()
        capacity = max(self._mask.shape[1], length + SLACK)
        self._mask = regrow_mask(self._mask, capacity, self.length, offset=n)
        self.length = length
        self.pending = torch.where(self.pending >= 0, self.pending + n, self.pending)

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, active: torch.Tensor, *, all_active: bool | None = None) -> StepOutput:
        """Feed one token per row (B,); rows where ``active`` (B,) is False are masked out.

        Active rows must have no pending token; their fed token becomes pending. When more than
        :attr:`dense_fraction` of the rows are active, every row goes through the model, the
        inactive ones with their new column masked out (their outputs are then meaningless): where a
        forward's cost grows far slower than its rows, that beats copying a sub-batch out of the
        cache. Fewer active rows go through alone (a sub-batch gathered from the cache: a copy of
        those rows only), and the outputs of the inactive rows are zeros. ``all_active`` tells the
        cache what ``active.all()`` is when the caller already knows it, which saves a device-to-host read.
        """
        if CHECKS:
            assert not bool((self.pending[active] >= 0).any()), "commit or discard the pending token first"
        assert self.length > 0, "reset rows before stepping"
        self.compact(force=self.static_batch and bool(self.layers) and self.length >= self.layers[0].capacity)
        column = self.length
        self._reserve(column + 1)  # a static batch's shapes change only here: when compaction could not make room
        self._mask[:, column] = active.long()
        tokens = tokens.to(self.lm.device)
        if all_active is None and not self.static_batch:
            all_active = bool(active.all())
        self._fix_shapes(self.static_batch, column)
        if self.static_batch:  # fixed shapes, and a prepared 4-D mask: transformers reads nothing to decide to skip it
            capacity = self.layers[0].capacity
            mask = self._additive_mask(capacity)
            out = self._forward(tokens[:, None], mask, self.pos[:, None], self.cache, self.step_model)
        elif all_active or int(active.sum()) > self.dense_fraction * self.num_rows:
            out = self._forward(tokens[:, None], self._mask[:, : column + 1], self.pos[:, None], self.cache)
        else:
            out = self._step_subset(active.nonzero().squeeze(1), tokens, column)
        self.length = column + 1
        for layer in self.layers:  # a sub-batch step wrote only its rows; every row's view now spans the column
            layer.length = self.length
            layer._view()
        self.pending = torch.where(active, column, self.pending)
        return out

    def _fix_shapes(self, fixed: bool, column: int) -> None:
        """Static batch: every layer attends over its whole buffer and writes at ``column``, a device index."""
        if fixed and self.step_model is not None:
            for layer in self.layers:
                for buf in (layer.kbuf, layer.vbuf):
                    torch._dynamo.mark_static_address(buf)  # idempotent; a regrown buffer is marked at its first step
        for layer in self.layers:
            if not fixed:
                if layer.column is not None:
                    layer.fix_shapes(None)
                continue
            index = self._columns.get(layer.device)
            if index is None:
                index = self._columns[layer.device] = torch.zeros(1, dtype=torch.long, device=layer.device)
            if layer.column is not index:
                layer.fix_shapes(index)
        for index in self._columns.values():
            index.fill_(column)  # host to device, asynchronous: no synchronisation

    def _additive_mask(self, length: int) -> torch.Tensor:
        """(B, 1, 1, length) attention mask in the model's dtype: 0 where a row attends, the dtype's minimum elsewhere.

        transformers uses a 4-D mask as given (``create_causal_mask``), for every attention implementation.
        """
        dtype = self.lm.dtype
        if self._mask.shape[1] < length:  # keeps the column this step has just written (at self.length)
            self._mask = regrow_mask(self._mask, length, self.length + 1)
        live = self._mask[:, None, None, :length].bool()
        return torch.zeros(live.shape, dtype=dtype, device=live.device).masked_fill(~live, torch.finfo(dtype).min)

    def _step_subset(self, index: torch.Tensor, tokens: torch.Tensor, column: int) -> StepOutput:
        """Forward only rows ``index`` (n,), then write their new column into the full buffers."""
        sub = [
            SlotLayer(
                gather_rows(layer.kbuf, index.to(layer.device), column),
                gather_rows(layer.vbuf, index.to(layer.device), column),
                column,
            )
            for layer in self.layers
        ]
        out = self._forward(tokens[index, None], self._mask[index, : column + 1], self.pos[index, None], SlotCache(sub))
        for layer, new in zip(self.layers, sub):
            layer.kbuf[index.to(layer.device), :, column] = new.kbuf[:, :, column]
            layer.vbuf[index.to(layer.device), :, column] = new.vbuf[:, :, column]
        hidden = out.hidden.new_zeros(self.num_rows, out.hidden.shape[-1])
        logits = out.logits.new_zeros(self.num_rows, out.logits.shape[-1])
        hidden[index], logits[index] = out.hidden, out.logits
        return StepOutput(hidden, logits)

    def release(self) -> None:
        """Free the keys and values (the env's ``close``); the next :meth:`reset_rows` of every row builds them again."""
        self.layers = []
        self._prefix = None
        self.length = 0

    def commit(self, rows: torch.Tensor) -> None:
        """Keep the pending token of rows (bool mask) and advance their positions."""
        if CHECKS:
            assert bool((self.pending[rows] >= 0).all()), "commit needs a pending token"
        self.pos += rows.long()
        self.pending = torch.where(rows, -1, self.pending)

    def discard(self, rows: torch.Tensor) -> None:
        """Drop the pending token of rows (bool mask): its column is masked, the position is reused."""
        if CHECKS:
            assert bool((self.pending[rows] >= 0).all()), "discard needs a pending token"
        column = self.pending.clamp(min=0)[:, None]  # (B, 1)
        kept = self._mask.gather(1, column) * (~rows).long()[:, None]
        self._mask.scatter_(1, column, kept)  # rows: 0 at their pending column; others unchanged
        self.pending = torch.where(rows, -1, self.pending)

    @torch.no_grad()
    def compact(self, force: bool = False) -> None:
        """Right-align each row's live columns and drop the rest when at least half the cache is dead.

        Whether half is dead needs the widest row's live count on the host (a synchronisation on a GPU), so
        it is read only once ``length`` reaches ``2 * keep + 16`` for the ``keep`` read last time: until then
        the cache cannot be half dead unless rows shrank, and compacting a little later costs only memory.
        """
        if self.length == 0 or (not force and self.length < self._next_compact_check):
            return
        live = self.mask.bool()  # pending columns are live: their mask is 1
        keep = int(live.sum(1).max())
        self._next_compact_check = 2 * keep + 16
        if not force and self.length < 2 * keep + 16:
            return
        # Stable sort puts dead columns first and live ones last, each row keeping its order.
        order = torch.sort(live.to(torch.int8), dim=1, stable=True).indices[:, self.length - keep :]  # (B, keep)
        capacity = keep + SLACK
        if self.static_batch and self.layers:  # fixed shapes: the buffers keep their size, or double when too small
            old = self.layers[0].capacity
            capacity = old if capacity <= old else max(capacity, 2 * old)
        for layer in self.layers:
            b, h, _, d = layer.kbuf.shape
            at = order.to(layer.device)  # (B, keep) on this layer's device (device_map)
            keys = layer.keys.gather(2, at[:, None, :, None].expand(b, h, keep, d))
            values = layer.values.gather(2, at[:, None, :, None].expand(b, h, keep, layer.vbuf.shape[3]))
            layer.kbuf, layer.vbuf = regrow(keys, capacity, keep), regrow(values, capacity, keep)
            layer.length = keep
            layer._view()
        has = self.pending >= 0
        new_pending = (order == self.pending[:, None]).to(torch.int8).argmax(1)
        self.pending = torch.where(has, new_pending, self.pending)
        mask = self.mask.gather(1, order)
        self._mask = regrow_mask(mask, capacity, keep)
        self.length = keep


def compile_decode_step(lm: FrozenLM, mode: str = "reduce-overhead") -> None:
    """Make every cache of ``lm`` a static batch (``lm.static_batch``, the default on a GPU) whose one-token steps run
    through ``torch.compile(lm.model, mode=mode)`` (CUDA graphs with the default mode on a GPU). Experimental:
    measured by ``benchmarks/gpu/bench_gpu.py``.

    A static batch's step has fixed shapes (every row, the whole key/value buffers under a 4-D mask, the column index
    on the device): it compiles to one graph, reused until a buffer grows or the batch size changes (a new shape,
    compiled again). The key/value buffers are written inside the step, so their addresses are marked static, as
    transformers' ``StaticCache`` does, for CUDA graphs to keep them. Prefills keep calling the model itself.
    """
    lm.static_batch = True
    lm.decode_step_model = torch.compile(lm.model, mode=mode, dynamic=False)
