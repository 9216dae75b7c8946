"""Copy the journey test's screenshots into docs/screenshots/ for the README, shrunk.

Run by `make screenshots` after the journey test has written test-artifacts/screenshots/.
Full-page screenshots are scaled to at most 1000 px wide and stored as 256-colour PNGs, which
keeps the twelve of them under 1 MB in the repository.
"""

import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "test-artifacts" / "screenshots"
TARGET = ROOT / "docs" / "screenshots"
WIDTH = 1000


def main() -> int:
    shots = sorted(SOURCE.glob("journey-*.png"))
    if not shots:
        print(
            f"no journey screenshots in {SOURCE}: run ./scripts/test.sh tests/journey first",
            file=sys.stderr,
        )
        return 1
    TARGET.mkdir(parents=True, exist_ok=True)
    for shot in shots:
        image = Image.open(shot).convert("RGB")
        if image.width > WIDTH:
            image = image.resize(
                (WIDTH, round(image.height * WIDTH / image.width)), Image.Resampling.LANCZOS
            )
        out = TARGET / shot.name
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
        print(f"{out.relative_to(ROOT)}  {out.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
