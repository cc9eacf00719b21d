"""Dead latents: tracking them over a token window, and the two auxiliary losses that revive them.

Shapes: ``n`` tokens, ``d`` input width, ``h`` latents. Every function here works in the SAE's normalised
space (``SAE.normalize``), the space its decoder writes in, and takes inputs flattened to ``(n, d)`` /
``(n, h)``.

- :class:`DeadLatentTracker`: per latent, the number of tokens seen since it last fired. A latent is dead when
  it has not fired on any of the last ``window_tokens`` tokens (Gao et al. 2024 §A.2 and their code
  ``stats_last_nonzero``, which counts in steps of a fixed batch; we count tokens so the window does not
  depend on the batch size).
- :func:`auxk_loss`: Gao et al. 2024 §A.2 (openai/sparse_autoencoder ``train.py``).
- :func:`ghost_grads_loss`: Jermyn & Templeton 2024, in the form PatchSAE's code inherits from SAELens /
  Conmy (``papers/patchsae.md`` §1.2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "DeadLatentTracker",
    "fired_latents",
    "normalized_mse",
    "auxk_loss",
    "ghost_grads_loss",
]


def fired_latents(codes: torch.Tensor) -> torch.Tensor:
    """``(..., h) -> (h,)`` bool: which latents are non-zero on at least one token."""
    return (codes != 0).reshape(-1, codes.shape[-1]).any(dim=0)


class DeadLatentTracker:
    """Tokens since each latent last fired, and the dead mask over a window of ``window_tokens`` tokens.

    :meth:`update` is called once per batch: every counter grows by the batch's token count and the
    counters of the latents that fired in the batch are reset to 0 (the resolution is one batch). A latent
    is dead when its counter is ``>= window_tokens``; at the start nothing is dead, so a latent that never
    fires becomes dead once ``window_tokens`` tokens have been seen.
    """

    def __init__(self, n_latents: int, window_tokens: int, device: torch.device | str = "cpu"):
        if window_tokens <= 0:
            raise ValueError(f"window_tokens must be positive, got {window_tokens}")
        self.window_tokens = int(window_tokens)
        self.tokens_since_fired = torch.zeros(n_latents, dtype=torch.long, device=device)
        self.tokens_seen = 0

    def update(self, fired: torch.Tensor, n_tokens: int) -> None:
        """Record a batch of ``n_tokens`` tokens in which the ``fired`` latents (``(h,)`` bool) fired."""
        if fired.shape != self.tokens_since_fired.shape:
            raise ValueError(
                f"fired must have shape {tuple(self.tokens_since_fired.shape)}, got {tuple(fired.shape)}"
            )
        self.tokens_since_fired += int(n_tokens)
        self.tokens_since_fired.masked_fill_(fired.to(self.tokens_since_fired.device), 0)
        self.tokens_seen += int(n_tokens)

    @property
    def dead_mask(self) -> torch.Tensor:
        """``(h,)`` bool: latents that have not fired in the last ``window_tokens`` tokens."""
        return self.tokens_since_fired >= self.window_tokens

    def dead_fraction(self) -> float:
        """Share of latents currently dead."""
        return self.dead_mask.float().mean().item()

    def state_dict(self) -> dict:
        return {
            "window_tokens": self.window_tokens,
            "tokens_since_fired": self.tokens_since_fired.cpu().clone(),
            "tokens_seen": self.tokens_seen,
        }

    def load_state_dict(self, state: dict) -> None:
        counters = state["tokens_since_fired"]
        if counters.shape != self.tokens_since_fired.shape:
            raise ValueError(
                f"dead-latent tracker state is for {counters.shape[0]} latents, this SAE has "
                f"{self.tokens_since_fired.shape[0]}"
            )
        self.window_tokens = int(state["window_tokens"])
        self.tokens_since_fired.copy_(counters)
        self.tokens_seen = int(state["tokens_seen"])


def normalized_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean((prediction - target)^2) / mean((target - mean_rows(target))^2)`` over ``(n, d)`` tensors.

    The MSE relative to predicting the per-dimension batch mean, as ``normalized_mse`` in
    openai/sparse_autoencoder (used only for AuxK). A constant target (zero denominator) gives 0, where the
    authors' code gives NaN and then ``nan_to_num(0)``; the zero is built so that no NaN reaches the gradient.
    """
    numerator = (prediction - target).pow(2).mean()
    denominator = (target - target.mean(dim=0, keepdim=True)).pow(2).mean()
    positive = denominator > 0
    ratio = numerator / torch.where(positive, denominator, torch.ones_like(denominator))
    return torch.where(positive, ratio, torch.zeros_like(ratio))


def auxk_loss(
    residual: torch.Tensor,
    pre_codes: torch.Tensor,
    dead_mask: torch.Tensor,
    decoder_weight: torch.Tensor,
    k_aux: int,
) -> torch.Tensor:
    """AuxK loss of Gao et al. 2024 §A.2: reconstruct the residual with the top-``k_aux`` dead latents.

    residual:       ``(n, d)`` ``e = x - x_hat`` of the main reconstruction (treated as a constant target).
    pre_codes:      ``(n, h)`` encoder pre-activations.
    dead_mask:      ``(h,)`` bool, the latents currently dead.
    decoder_weight: ``(h, d)`` decoder rows (atoms).

    ``z = ReLU(TopK_{k'}(pre_codes[:, dead]))`` with ``k' = min(k_aux, #dead)``, ``e_hat = z @ W_dec[dead]``
    (no decoder bias), and the loss is ``normalized_mse(e_hat, e)``. With no dead latent it is 0.
    The caller scales it by ``auxk_coefficient`` (Gao et al.: 1/32).
    """
    n_dead = int(dead_mask.sum().item())
    if n_dead == 0 or k_aux <= 0:
        return pre_codes.new_zeros(()).float()
    dead_pre = pre_codes[:, dead_mask]
    values, indices = dead_pre.topk(min(k_aux, n_dead), dim=-1)
    dead_codes = torch.zeros_like(dead_pre).scatter(-1, indices, F.relu(values))
    residual_hat = dead_codes @ decoder_weight[dead_mask].to(dead_codes.dtype)
    return normalized_mse(residual_hat.float(), residual.detach().float())


def ghost_grads_loss(
    x: torch.Tensor,
    x_hat: torch.Tensor,
    pre_codes: torch.Tensor,
    dead_mask: torch.Tensor,
    decoder_weight: torch.Tensor,
) -> torch.Tensor:
    """Ghost-gradient term (Jermyn & Templeton 2024), as in PatchSAE's SAELens-derived code.

    x, x_hat: ``(n, d)`` input and reconstruction (normalised space). pre_codes: ``(n, h)``.
    dead_mask: ``(h,)`` bool. decoder_weight: ``(h, d)``.

    1. residual ``r = x - x_hat`` (a constant target);
    2. ghost output ``g = exp(pre_codes[:, dead]) @ W_dec[dead]``, rescaled per token by the constant
       ``|r| / (2 |g| + 1e-6)`` so it has half the residual's norm;
    3. per element, the ghost error ``(g - r)^2 / |r|`` is multiplied by the constant
       ``recon / (ghost + 1e-6)``, where ``recon = (x_hat - x)^2 / |x|`` is the code's normalised
       reconstruction error, then averaged.

    Its value thus equals the normalised reconstruction error while its gradient reaches only the dead
    latents' encoder columns, biases and decoder rows. Norms are clamped at 1e-12 to avoid a division by zero
    on all-zero tokens (the authors' code has no guard). With no dead latent it is 0.
    """
    if not bool(dead_mask.any()):
        return pre_codes.new_zeros(()).float()
    x, x_hat = x.float(), x_hat.float()
    residual = (x - x_hat).detach()
    residual_norm = residual.norm(dim=-1, keepdim=True)
    ghost = torch.exp(pre_codes[:, dead_mask].float()) @ decoder_weight[dead_mask].float()
    ghost = ghost * (residual_norm / (2 * ghost.norm(dim=-1, keepdim=True) + 1e-6)).detach()
    ghost_error = (ghost - residual).pow(2) / residual_norm.clamp_min(1e-12)
    recon_error = (x_hat - x).detach().pow(2) / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return ((recon_error / (ghost_error + 1e-6)).detach() * ghost_error).mean()
