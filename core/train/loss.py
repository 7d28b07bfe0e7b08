"""The weighted, response-only SFT loss.

For one optimizer step over the samples i of its global batch (every micro-batch of the
accumulation, on every process), with ℓ_it = −log p(token t of response i | everything before it):

    L = Σ_i w_i Σ_{t ∈ resp(i)} ℓ_it  /  Σ_i w_i |resp(i)|

a weighted mean over response tokens. Why this normalisation:
- w_i = 1 everywhere gives exactly the usual token-mean SFT loss (what transformers computes with
  `num_items_in_batch`), so weights only ever *re-weight* samples: TAPIR's α_r curriculum moves
  emphasis between easy and hard samples, and scaling every weight by c changes nothing, so the
  learning rate means the same in every round.
- It does not depend on how samples are grouped: micro-batches, gradient accumulation, packing
  and data-parallel ranks all give the same L and gradient, because numerator and denominator
  are sums over tokens (the denominator is computed for the whole step before its first
  micro-batch: every process knows every batch).
- A weight of 0 removes a sample from both sums: no influence at all.
A per-sample mean (Σ_i w_i mean_t ℓ_it / Σ_i w_i) was the alternative; it gives each token of a
short answer more pull than a token of a long one, which TAPIR does not ask for.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from core.train.data import IGNORE


def token_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """ℓ per position (0 where the target is IGNORE), in float32. logits: B×T×V, targets: B×T,
    already shifted (targets[b, t] is the token after position t)."""
    flat = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=IGNORE, reduction="none")
    return flat.view(targets.shape)


def weighted_loss_sum(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ w_t ℓ_t over a micro-batch: the numerator of L (weights are 0 off the response)."""
    return (token_losses(logits, targets) * weights).sum()


def weighted_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                  denominator: float | torch.Tensor | None = None) -> torch.Tensor:
    """L for one micro-batch, or its share of a step's L when `denominator` is the step's
    Σ_i w_i |resp(i)| (then the shares of the step's micro-batches add up to L)."""
    if denominator is None:
        denominator = weights.sum()
    return weighted_loss_sum(logits, targets, weights) / denominator
