"""``render_mode="ansi"``: each env's prompt and response so far, rejected tokens struck through (``~~tok~~``); :meth:`Rendering.prefixes`: the same as token ids."""

from __future__ import annotations

import torch


class Rendering:
    """The text rendering of :class:`~proxy_env.vector.vector_env.ProxyRLHFVectorEnv` (a mixin of it)."""

    def _log(self, rows: torch.Tensor, token: torch.Tensor, rejected: bool) -> None:
        if self.render_mode != "ansi" or not bool(rows.any()):
            return
        for i in rows.nonzero().squeeze(1).tolist():
            text = self.lm.tokenizer.decode([int(token[i])])
            self._render_log[i].append(f"~~{text}~~" if rejected else text)

    def render(self) -> tuple[str, ...] | None:
        """With ``render_mode="ansi"``: per env, the prompt and the response so far, rejected tokens as ``~~tok~~``."""
        if self.render_mode != "ansi":
            return None
        return tuple(
            f"PROMPT: {self.prompts[int(self.prompt_index[i])]}\nRESPONSE: {''.join(self._render_log[i])}"
            for i in range(self.num_envs)
        )

    def prefixes(self) -> tuple[list[str], list[list[int]]]:
        """Each env's prompt and the token ids of its response so far (the state the candidate on offer extends)."""
        position = self.position.tolist()
        prompts = [self.prompts[int(i)] for i in self.prompt_index.tolist()]
        return prompts, [self.response[i, : position[i]].tolist() for i in range(self.num_envs)]
