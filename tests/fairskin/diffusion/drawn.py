"""Training items for the tiny-model engine tests: drawn lesions saved as PNGs."""

from pathlib import Path

from fairskin.diffusion.training import TrainItem
from fairskin.imaging.demo import draw_lesion


def drawn_items(folder: Path, cells, size: int = 64) -> list[TrainItem]:
    """One drawn image per (diagnosis, skin type) cell, seeded by its position; a diagnosis
    the drawer does not know ("OTHER") is drawn as BKL and keeps its own label."""
    out = []
    for i, (dx, fst) in enumerate(cells):
        path = Path(folder) / f"{i}.png"
        draw_lesion(dx if dx != "OTHER" else "BKL", fst, seed=i, size=size).save(path)
        out.append(TrainItem(str(path), dx, fst))
    return out
