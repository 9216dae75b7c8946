"""Training losses: min-SNR weighted denoising loss and FairSkin's class diversity loss."""

from __future__ import annotations

import csv
from collections import deque
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F

# What a UNet may be trained to predict (its scheduler config's prediction_type): the noise
# (SD v1.5) or the velocity v = sqrt(a) eps - sqrt(1 - a) x0 (SD 2.x at 768 px, for example).
PREDICTION_TYPES = ("epsilon", "v_prediction")


def check_prediction_type(prediction_type: str) -> str:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"prediction type {prediction_type!r} cannot be trained; FairSkin trains "
            f"{' or '.join(PREDICTION_TYPES)} models"
        )
    return prediction_type


def min_snr_weights(
    snr: torch.Tensor, gamma: float, prediction_type: str = "epsilon"
) -> torch.Tensor:
    """Per-sample min-SNR weights (Hang et al., 2023): min(SNR, gamma) / SNR when the UNet
    predicts the noise, min(SNR, gamma) / (SNR + 1) when it predicts v (whose squared error is
    (SNR + 1) times the noise's, so the same division leaves the same effective weight)."""
    capped = torch.clamp(snr, max=gamma)
    if check_prediction_type(prediction_type) == "v_prediction":
        return capped / (snr + 1)
    return capped / snr


def denoising_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    snr: torch.Tensor | None = None,
    gamma: float | None = None,
    prediction_type: str = "epsilon",
) -> torch.Tensor:
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(
        dim=tuple(range(1, pred.ndim))
    )
    if gamma is not None and snr is not None:
        per_sample = per_sample * min_snr_weights(snr.float(), gamma, prediction_type)
    return per_sample.mean()


def predicted_clean_latents(
    noisy: torch.Tensor,
    pred: torch.Tensor,
    alphas_cumprod_t: torch.Tensor,
    prediction_type: str = "epsilon",
) -> torch.Tensor:
    """x0 estimate from the UNet's output: (x_t - sqrt(1 - a) eps) / sqrt(a) from a noise
    prediction, sqrt(a) x_t - sqrt(1 - a) v from a velocity prediction."""
    a = alphas_cumprod_t.float().view(-1, *([1] * (noisy.ndim - 1)))
    if check_prediction_type(prediction_type) == "v_prediction":
        return a.sqrt() * noisy.float() - (1 - a).sqrt() * pred.float()
    return (noisy.float() - (1 - a).sqrt() * pred.float()) / a.sqrt()


class DenoisingObjective:
    """What the UNet learns, read from its noise scheduler's config (prediction_type): the
    target of its output, the min-SNR weights and the clean-latent estimate all follow it."""

    def __init__(self, scheduler: Any, device: torch.device) -> None:
        self.scheduler = scheduler
        self.prediction_type = check_prediction_type(
            str(getattr(scheduler.config, "prediction_type", "epsilon"))
        )
        self.alphas_cumprod = scheduler.alphas_cumprod.to(device)

    def target(
        self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """The noise, or diffusers' velocity sqrt(a) eps - sqrt(1 - a) x0 (get_velocity)."""
        if self.prediction_type == "v_prediction":
            return cast("torch.Tensor", self.scheduler.get_velocity(latents, noise, timesteps))
        return noise

    def snr(self, timesteps: torch.Tensor) -> torch.Tensor:
        """a / (1 - a) at each timestep: the signal-to-noise ratio of x_t (diffusers')."""
        from diffusers.training_utils import compute_snr

        return cast("torch.Tensor", compute_snr(self.scheduler, timesteps))

    def loss(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        timesteps: torch.Tensor,
        *,
        gamma: float | None,
    ) -> torch.Tensor:
        """The mean squared error, min-SNR weighted unless ``gamma`` is None."""
        snr = self.snr(timesteps) if gamma is not None else None
        return denoising_loss(
            pred, target, snr=snr, gamma=gamma, prediction_type=self.prediction_type
        )

    def clean_latents(
        self, noisy: torch.Tensor, pred: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        return predicted_clean_latents(
            noisy, pred, self.alphas_cumprod[timesteps], self.prediction_type
        )


def diversity_embedding(clean_latents: torch.Tensor, size: int = 4) -> torch.Tensor:
    """What the diversity loss compares: the predicted clean latent pooled to size x size.

    Why these embeddings: the loss should push apart what the model would draw, and the
    predicted clean latent is that drawing, available at every step at no extra cost. Pooling
    keeps the layout and colour of the lesion and skin and drops pixel noise. CLIP image
    features would need a VAE decode and a CLIP forward pass per sample and per step, and
    CLIP weights that this deployment may not have.
    """
    return F.adaptive_avg_pool2d(clean_latents, size).flatten(1)


DIVERSITY_FORMS = ("neg_log_distance", "similarity")
DIVERSITY_GROUPS = ("diagnosis_fst", "diagnosis")
# The run's diversity.csv: the unweighted term, the mean D and the groups with a term, per step.
DIVERSITY_LOG_COLUMNS = ["step", "diversity", "mean_distance", "groups"]
UNKNOWN_FST = "unknown"  # the group key's skin-type part for an image without an exact type


def diversity_group_key(diagnosis: str, fst: int | None, grouping: str) -> str:
    """The group a sample's embedding is compared within: ``MEL:5`` per diagnosis x exact
    skin type (``MEL:unknown`` without one), or ``MEL`` per diagnosis only."""
    if grouping == "diagnosis":
        return diagnosis
    if grouping == "diagnosis_fst":
        return f"{diagnosis}:{UNKNOWN_FST if fst is None else fst}"
    raise ValueError(f"diversity grouping must be one of {', '.join(DIVERSITY_GROUPS)}")


class DiversityLoss:
    """FairSkin's class diversity loss over groups of samples (diagnosis x skin type).

    For a group g with samples i in the batch, each compared with the group's other batch
    samples and its pool of recent embeddings (detached, at most ``pool_size`` per group, since
    a batch of four rarely holds two images of one group), the mean cosine distance is
    ``D_g = mean_i mean_j (1 - cos(e_i, e_j))``. The loss is the mean over groups of:

    - ``neg_log_distance`` (the planning document's): ``-log(D_g + eps)``; its gradient is
      ``1 / (D_g + eps)`` times that of ``1 - D_g``, so it pushes hardest near collapse.
      ``eps`` caps that factor at ``1 / eps`` and keeps the value finite at D_g = 0.
    - ``similarity`` (FairSkin before issue 16): the mean cosine similarity ``1 - D``, averaged
      per sample rather than per group.

    A group with no pair (one sample, empty pool) gives no term; a batch where no group has a
    pair gives 0 with a zero gradient. ``records`` holds, per call, the value, the mean D over
    the groups with a term and their number, for the run's diversity log (``end_step``).
    """

    def __init__(
        self,
        pool_size: int = 16,
        *,
        form: str = "neg_log_distance",
        eps: float = 1e-3,
        grouping: str = "diagnosis_fst",
    ) -> None:
        if form not in DIVERSITY_FORMS:
            raise ValueError(f"diversity form must be one of {', '.join(DIVERSITY_FORMS)}")
        if grouping not in DIVERSITY_GROUPS:
            raise ValueError(f"diversity grouping must be one of {', '.join(DIVERSITY_GROUPS)}")
        if not eps > 0:
            raise ValueError(f"diversity eps must be positive, got {eps!r}")
        self.pool_size, self.form, self.eps, self.grouping = pool_size, form, eps, grouping
        self.pools: dict[str, deque[torch.Tensor]] = {}
        self.records: list[tuple[float, float | None, int]] = []
        self._log_cut = False

    def group_of(self, diagnosis: str, fst: int | None) -> str:
        return diversity_group_key(diagnosis, fst, self.grouping)

    def __call__(self, embeddings: torch.Tensor, labels: list[str]) -> torch.Tensor:
        if len(labels) != embeddings.shape[0]:
            raise ValueError(f"{embeddings.shape[0]} embeddings but {len(labels)} group labels")
        normed = F.normalize(embeddings.float(), dim=1)
        per_group: dict[str, list[torch.Tensor]] = {}  # mean distance of each sample, by group
        for i, label in enumerate(labels):
            others = [normed[j] for j, other in enumerate(labels) if other == label and j != i]
            others += [p.to(normed.device) for p in self.pools.get(label, ())]
            if others:
                distance = 1 - (torch.stack(others) @ normed[i]).mean()
                per_group.setdefault(label, []).append(distance)
        for i, label in enumerate(labels):
            pool = self.pools.setdefault(label, deque(maxlen=self.pool_size))
            pool.append(normed[i].detach().cpu())
        if not per_group:
            self.records.append((0.0, None, 0))
            return embeddings.sum() * 0.0  # keeps the graph, contributes nothing
        group_d = [torch.stack(d).mean() for d in per_group.values()]
        if self.form == "similarity":
            loss = 1 - torch.cat([torch.stack(d) for d in per_group.values()]).mean()
        else:
            # Rounding can put D a hair below 0 for identical embeddings; eps keeps it finite.
            loss = torch.stack([-torch.log(d.clamp_min(0) + self.eps) for d in group_d]).mean()
        mean_d = torch.stack(group_d).mean().item()
        self.records.append((loss.item(), mean_d, len(group_d)))
        return loss

    def end_step(self, step: int, path: Path | None) -> None:
        """Append this optimizer step's diversity row (the mean over its micro-batches of the
        unweighted term, of D and of the groups with a term) to the CSV at ``path``, and start
        the next step afresh. The first call of a process drops rows from ``step`` on (steps a
        resumed run trains again). Nothing is written when the loss was not called, nor with
        no ``path`` (a data-parallel rank other than 0: rank 0 writes the same row)."""
        records, self.records = self.records, []
        if not records or path is None:
            return
        if not self._log_cut:
            self._log_cut = True
            kept = []
            if path.is_file():
                with path.open(newline="") as fh:
                    kept = [r for r in csv.DictReader(fh) if int(r["step"]) < step]
            with path.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=DIVERSITY_LOG_COLUMNS)
                writer.writeheader()
                writer.writerows(kept)
        distances = [d for _, d, _ in records if d is not None]
        with path.open("a", newline="") as fh:
            csv.writer(fh).writerow(
                [
                    step,
                    f"{sum(v for v, _, _ in records) / len(records):.6f}",
                    f"{sum(distances) / len(distances):.6f}" if distances else "",
                    f"{sum(n for _, _, n in records) / len(records):g}",
                ]
            )

    def state(self) -> dict[str, list[torch.Tensor]]:
        return {label: list(pool) for label, pool in self.pools.items()}

    def restore(self, state: dict[str, list[torch.Tensor]]) -> None:
        self.pools = {label: deque(items, maxlen=self.pool_size) for label, items in state.items()}
