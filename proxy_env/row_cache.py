"""The per-row KV-cache engine under the batched env: rows stepped, committed, discarded and refilled independently.

:class:`RowCache` runs batched one-token steps whose rows are independent: each row can be
prefilled with a new prompt, step one tentative token, then commit it or discard it, without
touching the other rows. See ``../shared/NOTES.md`` for the transformers facts it relies on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from proxy_env.lm import StepOutput

if TYPE_CHECKING:
    from proxy_env.lm import FrozenLM


class RowCache:
    """A batched KV cache whose rows are committed, discarded and refilled independently.

    Layout: every layer holds keys/values of shape (B, kv_heads, L, head_dim); ``mask`` (B, L) marks
    which columns each row attends to; ``pos`` (B,) is each row's next position id. A stepped token
    is *pending* until :meth:`commit` (keep, advance the position) or :meth:`discard` (mask its
    column out, keep the position). :meth:`compact` right-aligns each row's live columns, so the
    length stays bounded by the longest live sequence, not by the number of steps taken.
    """

    def __init__(self, lm: FrozenLM, num_rows: int, hidden_layer: int = -1) -> None:
        from transformers import DynamicCache

        self.lm = lm
        self.num_rows = num_rows
        self.hidden_layer = hidden_layer
        device = lm.device
        self.cache = DynamicCache()
        self.mask = torch.zeros(num_rows, 0, dtype=torch.long, device=device)  # (B, L)
        self.pos = torch.zeros(num_rows, dtype=torch.long, device=device)  # (B,)
        self.pending = torch.full((num_rows,), -1, dtype=torch.long, device=device)  # (B,) column or -1

    @property
    def length(self) -> int:
        return int(self.mask.shape[1])

    def _layers(self) -> list[Any]:
        return list(self.cache.layers)

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor, cache: Any) -> StepOutput:
        out = self.lm.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=position_ids,
            use_cache=True,
            output_hidden_states=True,
            **self.lm.cache_kwargs(cache),
        )
        return StepOutput(out.hidden_states[self.hidden_layer][:, -1].float(), out.logits[:, -1].float())

    @torch.no_grad()
    def reset_rows(self, rows: torch.Tensor, prompts: list[list[int]]) -> StepOutput:
        """Prefill ``prompts`` into the rows selected by bool mask ``rows`` (B,); other rows untouched.

        Returns the hidden state and next-token logits at each prompt's last token, (n, H) and (n, V).
        """
        from transformers import DynamicCache

        index = rows.nonzero().squeeze(1)
        assert len(index) == len(prompts) > 0, "one prompt per selected row"
        ids, pmask = self.lm.left_pad(prompts)  # (n, P)
        width = ids.shape[1]
        position_ids = (pmask.cumsum(-1) - 1).clamp(min=0)  # (n, P)
        fresh = DynamicCache()
        out = self._forward(ids, pmask, position_ids, fresh)
        if self.length < width:
            self._pad_left(width - self.length, fresh)
        start = self.length - width
        for layer, new in zip(self._layers(), fresh.layers):
            layer.keys[index] = 0.0  # clears garbage (even NaN) a never-used row may hold
            layer.values[index] = 0.0
            layer.keys[index, :, start:] = new.keys
            layer.values[index, :, start:] = new.values
        self.mask[index] = 0
        self.mask[index, start:] = pmask
        self.pos[index] = pmask.sum(-1)
        self.pending[index] = -1
        return out

    def _pad_left(self, n: int, like: Any) -> None:
        """Prepend ``n`` empty columns to every layer (initialising the layers on first use)."""
        if not self.cache.layers or not self.cache.layers[0].is_initialized:
            for i, new in enumerate(like.layers):
                shape = (self.num_rows, new.keys.shape[1], 0, new.keys.shape[3])
                empty_k = new.keys.new_zeros(shape)
                empty_v = new.values.new_zeros((*shape[:3], new.values.shape[3]))
                self.cache.update(empty_k, empty_v, i)
        for layer in self._layers():
            b, h, _, d = layer.keys.shape
            layer.keys = torch.cat([layer.keys.new_zeros(b, h, n, d), layer.keys], dim=2)
            layer.values = torch.cat([layer.values.new_zeros(b, h, n, layer.values.shape[3]), layer.values], dim=2)
        self.mask = torch.cat([self.mask.new_zeros(self.num_rows, n), self.mask], dim=1)
        self.pending = torch.where(self.pending >= 0, self.pending + n, self.pending)

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, active: torch.Tensor) -> StepOutput:
        """Feed one token per row (B,); rows where ``active`` (B,) is False are masked out.

        Active rows must have no pending token; their fed token becomes pending. When only some
        rows are active, only those rows go through the model (a sub-batch gathered from the
        cache); the outputs of inactive rows are then zeros.
        """
        assert not bool((self.pending[active] >= 0).any()), "commit or discard the pending token first"
        assert self.length > 0, "reset rows before stepping"
        self.compact()
        column = self.length
        self.mask = torch.cat([self.mask, active.long()[:, None]], dim=1)  # (B, L+1)
        tokens = tokens.to(self.lm.device)
        if bool(active.all()):
            out = self._forward(tokens[:, None], self.mask, self.pos[:, None], self.cache)
        else:
            out = self._step_subset(active.nonzero().squeeze(1), tokens)
        self.pending[active] = column
        return out

    def _step_subset(self, index: torch.Tensor, tokens: torch.Tensor) -> StepOutput:
        """Forward only rows ``index`` (n,), then append their new column (zeros elsewhere)."""
        from transformers import DynamicCache

        sub = DynamicCache(ddp_cache_data=[(layer.keys[index], layer.values[index]) for layer in self._layers()])
        out = self._forward(tokens[index, None], self.mask[index], self.pos[index, None], sub)  # (n, H), (n, V)
        for layer, new in zip(self._layers(), sub.layers):
            b, h, _, d = layer.keys.shape
            keys = layer.keys.new_zeros(b, h, 1, d)
            values = layer.values.new_zeros(b, h, 1, layer.values.shape[3])
            keys[index], values[index] = new.keys[:, :, -1:], new.values[:, :, -1:]
            layer.keys = torch.cat([layer.keys, keys], dim=2)
            layer.values = torch.cat([layer.values, values], dim=2)
        hidden = out.hidden.new_zeros(self.num_rows, out.hidden.shape[-1])
        logits = out.logits.new_zeros(self.num_rows, out.logits.shape[-1])
        hidden[index], logits[index] = out.hidden, out.logits
        return StepOutput(hidden, logits)

    def commit(self, rows: torch.Tensor) -> None:
        """Keep the pending token of rows (bool mask) and advance their positions."""
        assert bool((self.pending[rows] >= 0).all()), "commit needs a pending token"
        self.pos[rows] += 1
        self.pending[rows] = -1

    def discard(self, rows: torch.Tensor) -> None:
        """Drop the pending token of rows (bool mask): its column is masked, the position is reused."""
        assert bool((self.pending[rows] >= 0).all()), "discard needs a pending token"
        index = rows.nonzero().squeeze(1)
        self.mask[index, self.pending[index]] = 0
        self.pending[index] = -1

    @torch.no_grad()
    def compact(self, force: bool = False) -> None:
        """Right-align each row's live columns and drop the rest when at least half the cache is dead."""
        if self.length == 0:
            return
        live = self.mask.bool()  # pending columns are live: their mask is 1
        keep = int(live.sum(1).max())
        if not force and self.length < 2 * keep + 16:
            return
        # Stable sort puts dead columns first and live ones last, each row keeping its order.
        order = torch.sort(live.to(torch.int8), dim=1, stable=True).indices[:, self.length - keep :]  # (B, keep)
        for layer in self._layers():
            b, h, _, d = layer.keys.shape
            layer.keys = layer.keys.gather(2, order[:, None, :, None].expand(b, h, keep, d))
            layer.values = layer.values.gather(2, order[:, None, :, None].expand(b, h, keep, layer.values.shape[3]))
        has = self.pending >= 0
        new_pending = (order == self.pending[:, None]).to(torch.int8).argmax(1)
        self.pending = torch.where(has, new_pending, self.pending)
        self.mask = self.mask.gather(1, order)
