"""On-the-fly synthetic images: generated inside a classifier run's own job while it trains.

Before each training epoch the run tops up a bounded cache of images it generated itself,
and the epoch's loader draws its on-the-fly share from what the cache holds. Image ``k`` of
a run (counted over the whole run, in seed order) has a seed derived from the run's seed and
``k`` alone, and a stratum (diagnosis, skin type) from a fixed round-robin, so the images are
a function of the run's settings: a rerun with the same seed makes the same images, and a
resumed run regenerates (or finds on disk) exactly the ones the killed attempt had.

Epoch ``e`` (counted over all phases) sees images ``[(e+1)·P − C, (e+1)·P)``: ``P`` new ones
per epoch, the oldest leaving once the cache holds ``C``. Each device pass computes one fixed,
aligned micro-batch of consecutive indices, so an image's pixels never depend on where an
attempt stopped (see ``fairskin.generation.groups`` for why that matters).

These images have been through no blinded study. They live only in the run's folder, never in
the catalog, so no release can contain them; the record (``on_the_fly.json``) lists every one
the run generated, which epochs held it, how often the loader drew it, and what it cost.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairskin.classifier.data import ClassifierItem

if TYPE_CHECKING:
    import torch

FOLDER = "on_the_fly"
RECORD_FILE = "on_the_fly.json"
# Said wherever these images are counted: the run page, the fairness report, the manifest.
UNSTUDIED_NOTE = (
    "generated during training and never rated in a blinded study; not part of any release"
)

# One device pass: (diagnosis, skin type) per image and its seed -> images (N, 3, H, W) in
# [0, 1] and the prompts used.
Draw = Callable[[Sequence[tuple[str, int]], Sequence[int]], "tuple[torch.Tensor, list[str]]"]


class OnTheFlyError(ValueError):
    pass


@dataclass(frozen=True)
class OnTheFlyPlan:
    seed: int
    per_epoch: int
    cache: int
    strata: tuple[tuple[str, int], ...]  # (diagnosis, skin type), in round-robin order
    micro_batch: int = 4

    def __post_init__(self) -> None:
        if not self.strata:
            raise OnTheFlyError("on-the-fly generation needs at least one diagnosis x skin type")
        if self.per_epoch < 1 or self.cache < self.per_epoch or self.micro_batch < 1:
            raise OnTheFlyError(
                "on-the-fly generation needs per_epoch >= 1 and a cache at least that large"
            )

    def image_seed(self, index: int) -> int:
        digest = hashlib.sha256(f"fairskin-on-the-fly:{self.seed}:{index}".encode()).digest()
        return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF

    def stratum(self, index: int) -> tuple[str, int]:
        return self.strata[index % len(self.strata)]

    def window(self, epoch: int) -> range:
        """The image indices the cache holds during epoch ``epoch`` (0-based, all phases)."""
        end = (epoch + 1) * self.per_epoch
        return range(max(0, end - self.cache), end)


def interleaved_strata(
    diagnoses: Sequence[str], fsts: Sequence[int]
) -> tuple[tuple[str, int], ...]:
    """Every (diagnosis, skin type) once, ordered so that consecutive images change both:
    image ``k`` has diagnosis ``k mod D`` and skin type ``(k mod D + k div D) mod F``. Any run
    of D images holds every diagnosis, and (with D > F) every skin type, so even a small
    per-epoch count is balanced, where a diagnosis-major order would spend it on one class."""
    d, f = len(diagnoses), len(fsts)
    return tuple((diagnoses[k % d], fsts[(k % d + k // d) % f]) for k in range(d * f))


@dataclass
class ImageRecord:
    index: int
    seed: int
    diagnosis: str
    fst: int
    prompt: str
    sha256: str
    seconds: float
    epochs: list[int] = field(default_factory=list)
    draws: dict[str, int] = field(default_factory=dict)  # epoch -> times the loader drew it

    @property
    def drawn(self) -> int:
        return sum(self.draws.values())


class OnTheFlyCache:
    """The run's on-the-fly images on disk (``<run_dir>/on_the_fly/``) and their record.

    ``draw_factory`` builds the device pass the first time an image is missing, so a resumed
    run whose images are all on disk never loads the diffusion model."""

    def __init__(
        self,
        run_dir: Path,
        plan: OnTheFlyPlan,
        draw_factory: Callable[[], Draw],
        *,
        label_of: Callable[[str], int],
        log: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.folder = run_dir / FOLDER
        self.record_path = run_dir / RECORD_FILE
        self.plan = plan
        self.draw_factory = draw_factory
        self.label_of = label_of
        self.log = log
        self._draw: Draw | None = None
        self.images: dict[int, ImageRecord] = {}
        self.generation_seconds = 0.0
        self._load_record()
        self._seconds_before = self.generation_seconds  # what earlier attempts spent

    def _load_record(self) -> None:
        if not self.record_path.exists():
            return
        data = json.loads(self.record_path.read_text())
        if data.get("plan") != self._plan_dict():
            raise OnTheFlyError(
                f"{self.record_path} was written for other on-the-fly settings "
                f"({data.get('plan')}); this run asks for {self._plan_dict()}"
            )
        self.images = {int(r["index"]): ImageRecord(**r) for r in data["images"]}
        self.generation_seconds = float(data.get("generation_seconds", 0.0))

    def _plan_dict(self) -> dict[str, Any]:
        return {**asdict(self.plan), "strata": [list(s) for s in self.plan.strata]}

    def save(self) -> None:
        data = {
            "note": UNSTUDIED_NOTE,
            "plan": self._plan_dict(),
            "generation_seconds": round(self.generation_seconds, 3),
            "images": [asdict(self.images[k]) for k in sorted(self.images)],
        }
        tmp = self.record_path.with_suffix(".partial")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.record_path)  # the record is whole or absent

    def path(self, index: int) -> Path:
        return self.folder / f"{index:07d}.png"

    def _present(self, index: int) -> bool:
        record = self.images.get(index)
        path = self.path(index)
        if record is None or not path.exists():
            return False
        if hashlib.sha256(path.read_bytes()).hexdigest() != record.sha256:
            self.log(f"on-the-fly image {index} on disk differs from its record; regenerating")
            return False
        return True

    def items_for_epoch(self, epoch: int) -> list[ClassifierItem]:
        """The cache as epoch ``epoch`` sees it, topped up (generating what is missing) and
        with images older than its window removed from disk; the record keeps them."""
        window = self.plan.window(epoch)
        missing = [k for k in window if not self._present(k)]
        if missing:
            self._generate(missing)
        self.folder.mkdir(parents=True, exist_ok=True)
        for path in self.folder.glob("*.png"):
            if path.stem.isdigit() and int(path.stem) < window.start:
                path.unlink()
        for k in window:
            if epoch not in self.images[k].epochs:
                self.images[k].epochs.append(epoch)
        self.save()
        return [self.item(k) for k in window]

    def item(self, index: int) -> ClassifierItem:
        record = self.images[index]
        return ClassifierItem(
            path=str(self.path(index)),
            label=self.label_of(record.diagnosis),
            fst=record.fst,
            synthetic=True,
            key=f"on-the-fly-{index}",
            on_the_fly=True,
        )

    def count_draws(self, epoch: int, items: Sequence[ClassifierItem], order: Iterable[int]) -> int:
        """Record the loader's draws of on-the-fly images in epoch ``epoch`` (``order``:
        indices into ``items``), replacing any count an interrupted attempt left for it; how
        many draws there were."""
        for record in self.images.values():
            record.draws.pop(str(epoch), None)
        drawn = 0
        for i in order:
            key = items[i].key
            if items[i].on_the_fly and key is not None:
                draws = self.images[int(key.rsplit("-", 1)[1])].draws
                draws[str(epoch)] = draws.get(str(epoch), 0) + 1
                drawn += 1
        self.save()
        return drawn

    def _generate(self, indices: Sequence[int]) -> None:
        import numpy as np
        from PIL import Image

        if self._draw is None:
            self.log("loading the diffusion model for on-the-fly images")
            self._draw = self.draw_factory()
        self.folder.mkdir(parents=True, exist_ok=True)
        size = self.plan.micro_batch
        wanted = set(indices)
        for number in sorted({k // size for k in indices}):
            members = range(number * size, (number + 1) * size)  # one whole pass, always
            strata = [self.plan.stratum(k) for k in members]
            started = time.perf_counter()
            images, prompts = self._draw(strata, [self.plan.image_seed(k) for k in members])
            seconds = (time.perf_counter() - started) / size
            self.generation_seconds += seconds * size
            pixels = images.mul(255).round().clamp(0, 255).byte().permute(0, 2, 3, 1).cpu()
            for position, k in enumerate(members):
                if k not in wanted:
                    continue
                path = self.path(k)
                Image.fromarray(np.asarray(pixels[position])).save(path, format="PNG")
                old = self.images.get(k)
                self.images[k] = ImageRecord(
                    index=k,
                    seed=self.plan.image_seed(k),
                    diagnosis=strata[position][0],
                    fst=strata[position][1],
                    prompt=prompts[position],
                    sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                    seconds=round(seconds, 4),
                    epochs=old.epochs if old else [],
                    draws=old.draws if old else {},
                )
            self.save()

    def finish(self, elapsed: float) -> dict[str, Any]:
        """Drop the diffusion model (the evaluation needs the memory) and sum up the run's
        images; ``elapsed``: this attempt's seconds in the training loop, generation included
        (the training time reported is what is left of it)."""
        self._draw = None
        return self.summary(
            training_seconds=elapsed - (self.generation_seconds - self._seconds_before)
        )

    def summary(self, *, training_seconds: float) -> dict[str, Any]:
        drawn = [r for r in self.images.values() if r.drawn]
        return {
            "studied": False,
            "note": UNSTUDIED_NOTE,
            "record": RECORD_FILE,
            "images_generated": len(self.images),
            "images_drawn": len(drawn),
            "draws": sum(r.drawn for r in self.images.values()),
            "generation_seconds": round(self.generation_seconds, 2),
            "seconds_per_image": round(self.generation_seconds / len(self.images), 4)
            if self.images
            else None,
            "training_seconds": round(training_seconds, 2),
            "by_stratum": _by_stratum(self.images.values()),
        }


def _by_stratum(records: Iterable[ImageRecord]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in records:
        entry = out.setdefault(f"{r.diagnosis}|{r.fst}", {"images": 0, "draws": 0})
        entry["images"] += 1
        entry["draws"] += r.drawn
    return dict(sorted(out.items()))


def generator_draw(
    base: Any,
    run_dirs: Sequence[Path],
    *,
    steps: int,
    guidance: float,
    device: str | None = None,
    size: int | None = None,
) -> Draw:
    """A device pass with a fine-tuned model (``fairskin.generation.sampler``): the prompt of
    each (diagnosis, skin type) from the model's own tokens, each image its own seed, at the
    model's native size unless ``size`` is given (benchmarks on CPU)."""
    from fairskin.diffusion.tokens import prompt_for
    from fairskin.generation.sampler import BatchGenerator

    generator = BatchGenerator(base, run_dirs, device=device)

    def draw(
        strata: Sequence[tuple[str, int]], seeds: Sequence[int]
    ) -> tuple[torch.Tensor, list[str]]:
        prompts = [prompt_for(dx, fst, available=generator.tokens) for dx, fst in strata]
        images = generator.generate(prompts, seeds, steps=steps, guidance=guidance, size=size)
        return images, prompts

    return draw
