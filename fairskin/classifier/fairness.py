"""Fairness metrics across skin-type groups.

Definitions (stated once, used everywhere):
- AUROC per group: ROC AUC of the scores within the group. A group whose labels are all one
  class has no AUROC: it is reported as undefined with the reason, never as 0.5 or a crash.
- AUROC gap: max - min of the defined group AUROCs.
- TPR / FPR per group at ``threshold`` (score >= threshold is positive). A group with no
  positives has no TPR and is left out of the TPR difference; one with no negatives has no FPR
  and is left out of the FPR difference. The report's notes say so.
- Equalized-odds difference: the larger of the TPR difference and the FPR difference, each
  taken as max - min across groups. Where every group holds both classes this is fairlearn's
  ``equalized_odds_difference``; where a group lacks positives fairlearn reads its TPR as 0
  (sklearn's normalised confusion matrix), this report leaves it out and names it in notes.
- Multi-class: per-group macro one-vs-rest AUROC over the *common* classes, those every group
  holds (an image of the class and one of another class), so every group's figure and the gap
  average the same classes (``auroc_by_group_classes``; ``classes_by_group`` lists what each
  group holds, and a note names what was left out). The overall macro AUROC averages the
  classes the whole test set holds (``auroc_classes``). Equalized odds: for each class c the
  decision "predicted class (argmax) is c" against "true class is c", the binary difference
  above (groups without an image of c left out of c's TPR difference, listed in
  ``equalized_odds_detail`` and the notes); the figure is the largest over classes.
Bootstrap intervals resample images with replacement within each group (seeded), 2.5th-97.5th
percentiles.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score


def _group_keys(groups: np.ndarray) -> list[Any]:
    return sorted(set(groups.tolist()), key=lambda g: (str(type(g)), g))


def _auroc(y_true: np.ndarray, y_score: np.ndarray) -> float | None:
    if len(np.unique(y_true)) < 2:
        return None
    return float(roc_auc_score(y_true, y_score))


def _spread(values: dict[Any, float | None]) -> float | None:
    defined = [v for v in values.values() if v is not None]
    return float(max(defined) - min(defined)) if len(defined) >= 2 else None


def _rates(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float | None, float | None]:
    positives = y_true == 1
    negatives = ~positives
    tpr = float(y_pred[positives].mean()) if positives.any() else None
    fpr = float(y_pred[negatives].mean()) if negatives.any() else None
    return tpr, fpr


def _eod(tpr: dict[Any, float | None], fpr: dict[Any, float | None]) -> float | None:
    parts = [d for d in (_spread(tpr), _spread(fpr)) if d is not None]
    return max(parts) if parts else None


def _binary_core(
    y_true: np.ndarray, y_score: np.ndarray, groups: np.ndarray, threshold: float
) -> dict[str, Any]:
    y_pred = (y_score >= threshold).astype(int)
    keys = _group_keys(groups)
    auroc, tpr, fpr, accuracy, counts, notes = {}, {}, {}, {}, {}, []
    for g in keys:
        m = groups == g
        counts[g] = {
            "n": int(m.sum()),
            "positives": int(y_true[m].sum()),
            "negatives": int((y_true[m] == 0).sum()),
        }
        auroc[g] = _auroc(y_true[m], y_score[m])
        if auroc[g] is None:
            only = "positive" if y_true[m].all() else "negative"
            notes.append(f"group {g}: AUROC undefined (all {counts[g]['n']} labels are {only})")
        tpr[g], fpr[g] = _rates(y_true[m], y_pred[m])
        if tpr[g] is None:
            notes.append(f"group {g}: no positives, left out of the TPR difference")
        if fpr[g] is None:
            notes.append(f"group {g}: no negatives, left out of the FPR difference")
        accuracy[g] = float((y_pred[m] == y_true[m]).mean())
    return {
        "n": int(len(y_true)),
        "threshold": threshold,
        "accuracy": float((y_pred == y_true).mean()),
        "auroc": _auroc(y_true, y_score),
        "auroc_by_group": auroc,
        "auroc_gap": _spread(auroc),
        "tpr_by_group": tpr,
        "fpr_by_group": fpr,
        "tpr_difference": _spread(tpr),
        "fpr_difference": _spread(fpr),
        "equalized_odds_difference": _eod(tpr, fpr),
        "accuracy_by_group": accuracy,
        "counts_by_group": counts,
        "notes": notes,
    }


def _percentiles(samples: list[float]) -> list[float] | None:
    if len(samples) < 10:
        return None
    low, high = np.percentile(samples, [2.5, 97.5])
    return [float(low), float(high)]


def _bootstrap(
    compute: Callable[..., dict[str, Any]],
    arrays: Sequence[np.ndarray],
    n: int,
    seed: int,
    *,
    keys: Sequence[str],
    group_keys: Sequence[str],
) -> dict[str, Any]:
    """Percentile intervals for scalar ``keys`` and per-group ``group_keys``. ``arrays`` are
    (labels, scores, groups); images are resampled within each group, so every group keeps
    its size (a replicate that loses a class from a group averages the classes every group
    still holds, as the point estimate does; fixing (group, class) cells instead would freeze
    one-image cells and hide their noise)."""
    rng = np.random.default_rng(seed)
    groups = arrays[2]
    cells = [np.flatnonzero(groups == g) for g in _group_keys(groups)]
    scalar: dict[str, list[float]] = {k: [] for k in keys}
    per_group: dict[str, dict[Any, list[float]]] = {k: {} for k in group_keys}
    for _ in range(n):
        idx = np.concatenate([c[rng.integers(0, len(c), len(c))] for c in cells])
        result = compute(*(a[idx] for a in arrays))
        for k in keys:
            if result[k] is not None:
                scalar[k].append(result[k])
        for k in group_keys:
            for g, v in result[k].items():
                if v is not None:
                    per_group[k].setdefault(g, []).append(v)
    out: dict[str, Any] = {k: _percentiles(v) for k, v in scalar.items()}
    for k in group_keys:
        out[k] = {g: _percentiles(v) for g, v in per_group[k].items()}
    return out


def fairness_report(
    y_true: Sequence[int],
    y_score: Sequence[float],
    groups: Sequence[Any],
    threshold: float = 0.5,
    *,
    n_bootstrap: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Binary fairness report; ``y_score`` is the probability of the positive class."""
    yt = np.asarray(y_true, dtype=int)
    ys = np.asarray(y_score, dtype=float)
    gs = np.asarray(groups, dtype=object)
    if not (len(yt) == len(ys) == len(gs)) or len(yt) == 0:
        raise ValueError("y_true, y_score and groups must be non-empty and of equal length")
    if set(np.unique(yt)) - {0, 1}:
        raise ValueError("binary y_true must hold only 0 and 1")
    report = _binary_core(yt, ys, gs, threshold)
    if n_bootstrap:
        report["ci"] = _bootstrap(
            lambda a, b, c: _binary_core(a, b, c, threshold),
            (yt, ys, gs),
            n_bootstrap,
            seed,
            keys=("accuracy", "auroc", "auroc_gap", "equalized_odds_difference"),
            group_keys=("auroc_by_group",),
        )
    return report


def class_sets(y_true: np.ndarray, groups: np.ndarray, n_classes: int) -> dict[str, Any]:
    """The classes each group's one-vs-rest AUROC is defined for (at least one image of the
    class and one of another class in the group), and those defined in every group."""
    by_group = {}
    for g in _group_keys(groups):
        labels = y_true[groups == g]
        present = set(labels.tolist())
        by_group[g] = [c for c in range(n_classes) if c in present and len(present) > 1]
    common = [c for c in range(n_classes) if all(c in v for v in by_group.values())]
    return {"by_group": by_group, "common": common}


def _macro(y_true: np.ndarray, proba: np.ndarray, classes: Sequence[int]) -> float | None:
    per_class = [_auroc((y_true == c).astype(int), proba[:, c]) for c in classes]
    defined = [a for a in per_class if a is not None]
    return float(np.mean(defined)) if defined else None


def _eod_by_class(
    y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, n_classes: int
) -> dict[int, dict[str, Any]]:
    keys = _group_keys(groups)
    out = {}
    for c in range(n_classes):
        tpr, fpr = {}, {}
        for g in keys:
            m = groups == g
            tpr[g], fpr[g] = _rates((y_true[m] == c).astype(int), (y_pred[m] == c).astype(int))
        value = _eod(tpr, fpr)
        out[c] = {
            "value": value,
            "tpr_difference": _spread(tpr),
            "fpr_difference": _spread(fpr),
            "excluded_from_tpr": [g for g in keys if tpr[g] is None],
            "excluded_from_fpr": [g for g in keys if fpr[g] is None],
        }
    return out


def _multiclass_core(
    y_true: np.ndarray, proba: np.ndarray, groups: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    k = len(class_names)
    y_pred = proba.argmax(axis=1)
    keys = _group_keys(groups)
    sets = class_sets(y_true, groups, k)
    common = sets["common"]
    auroc = {g: _macro(y_true[groups == g], proba[groups == g], common) for g in keys}
    overall_classes = [c for c in range(k) if 0 < (y_true == c).sum() < len(y_true)]
    eod = _eod_by_class(y_true, y_pred, groups, k)
    defined_eod = [v["value"] for v in eod.values() if v["value"] is not None]
    notes = []
    left_out = [class_names[c] for c in range(k) if c not in common and c in overall_classes]
    if left_out:
        missing = {
            g: [class_names[c] for c in overall_classes if c not in sets["by_group"][g]]
            for g in keys
        }
        where = "; ".join(f"group {g} lacks {', '.join(v)}" for g, v in missing.items() if v)
        notes.append(
            f"per-group AUROCs and the gap average the {len(common)} classes every group "
            f"holds, leaving out {', '.join(left_out)} ({where})"
        )
    for c, d in eod.items():
        for g in d["excluded_from_tpr"]:
            notes.append(
                f"equalized odds, class {class_names[c]}: group {g} has no {class_names[c]} "
                f"image, left out of the TPR difference"
            )
    return {
        "n": int(len(y_true)),
        "accuracy": float((y_pred == y_true).mean()),
        "auroc": _macro(y_true, proba, overall_classes),
        "auroc_classes": [class_names[c] for c in overall_classes],
        "auroc_by_group": auroc,
        "auroc_by_group_classes": [class_names[c] for c in common],
        "classes_by_group": {g: [class_names[c] for c in v] for g, v in sets["by_group"].items()},
        "auroc_gap": _spread(auroc),
        "accuracy_by_group": {
            g: float((y_pred[groups == g] == y_true[groups == g]).mean()) for g in keys
        },
        "equalized_odds_difference": max(defined_eod) if defined_eod else None,
        "equalized_odds_by_class": {class_names[c]: d["value"] for c, d in eod.items()},
        "equalized_odds_detail": {class_names[c]: d for c, d in eod.items()},
        "counts_by_group": {g: int((groups == g).sum()) for g in keys},
        "notes": notes,
    }


def fairness_report_multiclass(
    y_true: Sequence[int],
    y_proba: Sequence[Sequence[float]] | np.ndarray,
    groups: Sequence[Any],
    *,
    class_names: Sequence[str],
    n_bootstrap: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """The seven-class report: macro one-vs-rest AUROC overall and per group, per-class
    precision/recall/F1 and one-vs-rest AUROC, and the equalized-odds difference."""
    yt = np.asarray(y_true, dtype=int)
    proba = np.asarray(y_proba, dtype=float)
    gs = np.asarray(groups, dtype=object)
    k = len(class_names)
    if proba.ndim != 2 or proba.shape != (len(yt), k) or len(gs) != len(yt) or not len(yt):
        raise ValueError("y_proba must be (n, n_classes) with n = len(y_true) = len(groups)")
    if yt.min() < 0 or yt.max() >= k:
        raise ValueError(f"y_true must hold class indices 0..{k - 1}")
    report = _multiclass_core(yt, proba, gs, class_names)
    precision, recall, f1, support = precision_recall_fscore_support(
        yt, proba.argmax(axis=1), labels=list(range(k)), zero_division=0
    )
    report["per_class"] = {
        name: {
            "precision": float(precision[c]),
            "recall": float(recall[c]),
            "f1": float(f1[c]),
            "support": int(support[c]),
            "auroc": _auroc((yt == c).astype(int), proba[:, c]),
        }
        for c, name in enumerate(class_names)
    }
    if n_bootstrap:
        report["ci"] = _bootstrap(
            lambda a, b, c: _multiclass_core(a, b, c, class_names),
            (yt, proba, gs),
            n_bootstrap,
            seed,
            keys=("accuracy", "auroc", "auroc_gap", "equalized_odds_difference"),
            group_keys=("auroc_by_group",),
        )
    return report


FST_GROUPS = {1: "I–II", 2: "I–II", 3: "III–IV", 4: "III–IV", 5: "V–VI", 6: "V–VI"}


def fst_group(fst: int) -> str:
    return FST_GROUPS[int(fst)]
