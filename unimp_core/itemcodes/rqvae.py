"""`--quantizer rqvae`: a small RQ-VAE (residual-quantised autoencoder, as TIGER's semantic ids) over item
embeddings.

    x (B, D) -> encoder MLP -> z (B, latent) -> `levels` residual codebooks -> z_q -> decoder MLP -> x_hat

Training: the first fifth of the steps trains a plain autoencoder; then every codebook is initialised by
residual k-means on the encoder's outputs (`quantize.residual_kmeans`) and the rest trains reconstruction
+ codebook + commitment losses, the gradient passing the quantiser by the straight-through estimator.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..progress import Progress
from ..specs.items import RQVAESpec
from .quantize import residual_kmeans

EVAL_ITEMS = 4096  # the reconstruction error reported before and after training is measured on this many items
WARMUP_SHARE = 0.2


class RQVAE(nn.Module):
    def __init__(self, dim: int, latent: int, hidden: int, levels: int, codes: int, beta: float) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, latent))
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.codebooks = nn.Parameter(torch.zeros(levels, codes, latent))  # set from k-means before use
        self.beta = beta

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Residual quantisation of z (B, latent): (codes (B, levels), quantised (B, latent), codebook +
        commitment loss)."""
        residual, quantised = z, torch.zeros_like(z)
        codes, loss = [], z.new_zeros(())
        for book in self.codebooks:  # book: (codes, latent)
            r = residual.detach()
            dist = (r * r).sum(1, keepdim=True) - 2 * r @ book.T + (book * book).sum(1)  # (B, codes)
            idx = dist.argmin(1)  # (B,)
            q = book[idx]  # (B, latent)
            # codebook entries move to their residuals; the encoder commits to its codes
            loss = loss + F.mse_loss(q, r) + self.beta * F.mse_loss(residual, q.detach())
            quantised = quantised + q
            residual = residual - q.detach()
            codes.append(idx)
        return torch.stack(codes, 1), quantised, loss

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(total loss, reconstruction loss) of a batch x (B, D)."""
        z = self.encoder(x)
        _, quantised, vq_loss = self.quantize(z)
        z_q = z + (quantised - z).detach()  # straight-through: forward uses the codes, backward skips them
        recon = F.mse_loss(self.decoder(z_q), x)
        return recon + vq_loss, recon


def _pick_device(device: str) -> str:
    return "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"


@torch.no_grad()
def _encode(model: RQVAE, data: torch.Tensor, device: str, chunk: int = 65536) -> torch.Tensor:
    return torch.cat([model.encoder(data[i:i + chunk].to(device)).cpu() for i in range(0, len(data), chunk)])


@torch.no_grad()
def _recon_error(model: RQVAE, data: torch.Tensor, device: str) -> float:
    _, recon = model(data.to(device))
    return round(float(recon), 6)


def train_rqvae(x: np.ndarray, spec: RQVAESpec, levels: int, codes: int, fit_items: int, seed: int, device: str,
                progress: Progress) -> tuple[np.ndarray, dict[str, Any], np.ndarray, np.ndarray]:
    """Train an RQ-VAE on x (N, D). Returns every item's codes (N, levels) int32, training stats, and what
    was quantised: the latents (N, latent) and the codebooks (levels, codes, latent)."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    dev = _pick_device(device)
    data = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))  # (N, D), stays on the CPU
    n = len(data)
    model = RQVAE(data.shape[1], spec.latent, spec.hidden, levels, codes, spec.beta).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr)
    batch = min(spec.batch_size, n)
    warm = int(spec.steps * WARMUP_SHARE)
    probe = data[torch.randperm(n, generator=gen)[:EVAL_ITEMS]]  # (<=EVAL_ITEMS, D)
    stats: dict[str, Any] = {"steps": spec.steps, "autoencoder_steps": warm}
    with progress.task("RQ-VAE training", spec.steps) as advance:
        for step in range(spec.steps):
            if step == warm:  # the codebooks start as residual k-means of the encoder's outputs
                z = _encode(model, data, dev).numpy()
                _, books, _ = residual_kmeans(z, levels, codes, fit_items, seed, Progress())
                model.codebooks.data.copy_(torch.from_numpy(books))
                stats["recon_mse_at_init"] = _recon_error(model, probe, dev)
            xb = data[torch.randint(n, (batch,), generator=gen)].to(dev)  # (B, D)
            if step < warm:
                loss = F.mse_loss(model.decoder(model.encoder(xb)), xb)
            else:
                loss, _ = model(xb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            advance(1, info=f"loss {float(loss.detach()):.4f}")
    model.eval()
    stats["recon_mse_final"] = _recon_error(model, probe, dev)
    with torch.no_grad():
        z = _encode(model, data, dev)
        out = torch.cat([model.quantize(z[i:i + 65536].to(dev))[0].cpu() for i in range(0, n, 65536)])
    stats["seconds"] = round(time.perf_counter() - t0, 2)
    stats["device"] = dev
    return out.numpy().astype(np.int32), stats, z.numpy(), model.codebooks.detach().cpu().numpy()
