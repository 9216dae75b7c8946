"""Human-readable run outputs: the model card, the loss curve and image grids."""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from fairskin.charts import line_chart
from fairskin.labels import fst_roman


def image_grid(
    images: Sequence[Image.Image],
    *,
    rows: int,
    cols: int,
    row_labels: Sequence[str] = (),
    col_labels: Sequence[str] = (),
) -> Image.Image:
    """Images in a rows x cols grid with a label margin on the left and top."""
    if not images:
        raise ValueError("no images for the grid")
    width, height = images[0].size
    left = 48 if row_labels else 0
    top = 16 if col_labels else 0
    grid = Image.new("RGB", (left + cols * width, top + rows * height), "white")
    draw = ImageDraw.Draw(grid)
    for index, image in enumerate(images[: rows * cols]):
        r, c = divmod(index, cols)
        grid.paste(
            image.convert("RGB").resize((width, height)), (left + c * width, top + r * height)
        )
    for r, label in enumerate(row_labels):
        draw.text((2, top + r * height + height // 2 - 5), str(label), fill="black")
    for c, label in enumerate(col_labels):
        draw.text((left + c * width + width // 2 - 6, 2), str(label), fill="black")
    return grid


def loss_svg(history: Sequence[tuple[int, float]]) -> str:
    """The loss curve as a standalone SVG (no plotting library needed to read it): the same
    geometry as the run page's chart (`fairskin.charts.line_chart`), with ticks and values
    on both axes and the axis titles."""
    chart = line_chart(
        [(float(s), float(v)) for s, v in history], x_title="training step", y_title="loss"
    )
    head = '<svg xmlns="http://www.w3.org/2000/svg" font-family="sans-serif"'
    if chart is None:
        return f'{head} width="480" height="270"/>'
    c = chart
    parts = [
        f'{head} width="{c["width"]}" height="{c["height"]}" '
        f'viewBox="0 0 {c["width"]} {c["height"]}">',
        '<rect width="100%" height="100%" fill="white"/>',
    ]
    for t in c["y_ticks"]:
        parts.append(
            f'<line stroke="#e5e5e5" x1="{c["left"]}" x2="{c["right"]}" y1="{t["y"]}" '
            f'y2="{t["y"]}"/><text font-size="13" fill="#555" x="{c["tick_label_x"]}" '
            f'y="{t["y"]}" text-anchor="end" dominant-baseline="middle">{t["label"]}</text>'
        )
    for t in c["x_ticks"]:
        parts.append(
            f'<line stroke="#999" x1="{t["x"]}" x2="{t["x"]}" y1="{c["bottom"]}" '
            f'y2="{c["tick_end"]}"/><text font-size="13" fill="#555" x="{t["x"]}" '
            f'y="{c["tick_label_y"]}" text-anchor="middle">{t["label"]}</text>'
        )
    x_title, y_title, last = c["x_title"], c["y_title"], c["last"]
    parts += [
        f'<line stroke="#999" x1="{c["left"]}" x2="{c["left"]}" y1="{c["top"]}" '
        f'y2="{c["bottom"]}"/>',
        f'<line stroke="#999" x1="{c["left"]}" x2="{c["right"]}" y1="{c["bottom"]}" '
        f'y2="{c["bottom"]}"/>',
        f'<polyline fill="none" stroke="#7a4b2a" stroke-width="1.5" points="{c["points"]}"/>',
        f'<circle cx="{last["x"]}" cy="{last["y"]}" r="3" fill="#7a4b2a"/>',
        f'<text font-size="14" font-weight="600" x="{x_title["x"]}" y="{x_title["y"]}" '
        f'text-anchor="middle">{x_title["text"]}</text>',
        f'<text font-size="14" font-weight="600" transform="rotate(-90)" x="{y_title["x"]}" '
        f'y="{y_title["y"]}" text-anchor="middle">{y_title["text"]}</text>',
        f"<title>Training loss by step: last {last['value']:.4f} at step {int(last['at'])}</title>",
        "</svg>",
    ]
    return "".join(parts)


def model_card(info: dict[str, Any], items: Sequence[Any]) -> str:
    """The run's model card: intended use, data and licences, per-FST counts, limitations."""
    per_fst = Counter(i.fst for i in items)
    per_dx = Counter(i.diagnosis for i in items)
    datasets = info.get("datasets", [])
    lines = [
        f"# FairSkin {info['config']['kind'].replace('_', ' ')} run"
        + (f" {info['run_id']}" if info.get("run_id") else ""),
        "",
        "## Intended use",
        "Generating synthetic dermatology images to augment under-represented skin types for "
        "research on fairer skin-lesion classifiers. Not for diagnosis, not for patient care, "
        "and not to be released without the blinded dermatologist review FairSkin gates "
        "releases on.",
        "",
        "## Base model",
        f"{info['base_model']}",
        "",
        "## Training data",
    ]
    if datasets:
        lines += [
            f"- {d['name']}: {d.get('images', '?')} images, licence: "
            f"{d.get('licence') or 'not recorded'}"
            for d in datasets
        ]
    else:
        lines.append("- (selection not recorded)")
    if info.get("selection_hash"):
        lines.append(f"- selection hash: `{info['selection_hash']}`")
    lines += [
        "",
        "Images per Fitzpatrick skin type:",
        "",
        "| FST | " + " | ".join(fst_roman(f) for f in range(1, 7)) + " |",
        "|---|" + "---|" * 6,
        "| images | " + " | ".join(str(per_fst.get(f, 0)) for f in range(1, 7)) + " |",
        "",
        "Images per diagnosis: " + ", ".join(f"{dx} {n}" for dx, n in sorted(per_dx.items())),
        "",
        "## Training",
        f"- kind: {info['config']['kind']}, steps: {info['steps']}, "
        f"final loss: {info['final_loss']:.4f}",
        f"- learned tokens: {', '.join(info['tokens']) or 'none'}",
        "- libraries: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        "",
        "## Limitations",
        "- Skin types with few training images (see the table) are learned from little "
        "data; compositional tokens let the model combine a diagnosis with a skin type it "
        "never saw together, which is the point, but such images need the review most.",
        "- Fitzpatrick types estimated from ITA are approximate (ITA agrees with human "
        "labels within one type on only about half of Fitzpatrick17k).",
        "- Synthetic images inherit the base model's and the datasets' biases and "
        "licences; see the licences above before sharing anything generated.",
        "",
    ]
    return "\n".join(lines)


TRAINING_REPORT_FILE = "training_report.json"  # what trains, written when training starts
MANIFEST_FILE = "manifest.json"  # everything about the run, written when it ends


def write_training_report(run_dir: Path, **values: Any) -> Path:
    """Record ``values`` (e.g. ``trainable_parameters``) in the run's training_report.json,
    keeping what it already holds under other keys."""
    path = Path(run_dir) / TRAINING_REPORT_FILE
    report = _json_object(path)
    report.update(values)
    staging = path.with_name(path.name + ".partial")
    staging.write_text(json.dumps(report, indent=2, sort_keys=True))
    staging.replace(path)  # a reader never sees half a file
    return path


def read_training_report(run_dir: Path) -> dict[str, Any]:
    """What a run's folder reports about its training: its training_report.json (from the
    start: ``trainable_parameters`` = {"lora", "embeddings", "total"}) under its manifest
    (at the end: config, tokens, final loss, ...). {} when it has neither."""
    return {
        **_json_object(Path(run_dir) / TRAINING_REPORT_FILE),
        **_json_object(Path(run_dir) / MANIFEST_FILE),
    }


def _json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_loss_log(path: Path, *, up_to: int | None = None) -> list[tuple[int, float, float]]:
    """(step, loss, gradient norm before clipping) rows of a run's loss.csv."""
    if not path.exists():
        return []
    with path.open() as fh:
        rows = [
            (int(r["step"]), float(r["loss"]), float(r["grad_norm"])) for r in csv.DictReader(fh)
        ]
    return [r for r in rows if up_to is None or r[0] <= up_to]
