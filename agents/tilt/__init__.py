"""``proxy-rlhf train --backend tilt``: the proxy trained on the exact KL-regularised objective of each position.

At a response position the LLM offers the pool ``q``; a proxy with accept probabilities ``a`` over it
commits token ``y`` with the steered probability ``π_a(y)`` (:func:`proxy_env.engine.steering.steered_probs`,
exact and differentiable). Committing ``y`` changes the reward model's score of the response so far by
``Δ(y) = Φ(s + y) − Φ(s)``, the potential-based shaped reward of that step. The backend minimises, over the
proxy's weights, the mean over positions of

    KL(π_a ‖ q) − E_{y∼π_a}[Δ(y)] / β,

whose minimiser over all distributions is the tilt ``π ∝ q · exp(Δ / β)``: the KL-regularised optimum of
one step, which the proxy approaches as far as a Markov accept rule under sampling without replacement
can. Every candidate's ``Δ`` is computed (one reward call per candidate), so there is no sampling noise
in the objective and no action is ever sampled during training.

It runs in two phases:

1. **collect**: the env (``observation="prefix"``) runs the LLM's own sampler (always-accept) for
   ``total_timesteps`` decisions; each position keeps the prefix hidden state, the pool and ``Δ`` of
   every pool candidate (centred under ``q``). ``TiltConfig.tilt_data`` caches this on disk.
2. **fit**: ``tilt_warmup_epochs`` passes fitting P(accept) to the with-replacement solution
   ``exp(min(0, (Δ − max Δ)/β))`` (:func:`warm_start_loss`: from always-accept the exact objective's
   gradient vanishes, every accept probability saturating at 1), then ``tilt_epochs`` passes of Adam on the
   exact objective, both through the SB3 policy's own actor
   (``policy.get_distribution``), so the result is an ordinary SB3 proxy checkpoint that ``generate``,
   ``bench``, ``export`` and ``--resume`` (with PPO) load as they load any other.

What it leaves out (its bias): the effect of a token on the rest of the response. ``Δ`` is the change of
the score *now*; a word that makes later words less positive is not charged for them. β is the tilt's
temperature: the KL per response falls as β grows. ``TiltConfig.tilt_future`` adds an estimate of that
missing part: the reward change still to come after each candidate under the LLM's own sampler,
``E_q[R − Φ(s + y)]``, regressed (ridge, linear in the candidate's observation) on the collected responses'
final rewards (:func:`agents.tilt_future.future_values`), so the fit tilts toward ``q·exp(Q_q/β)`` with ``Q_q(s, y) = E_q[R | s, y]``
(the first-order value of controlled decoding) instead of the myopic ``q·exp(Δ/β)``.
"""
