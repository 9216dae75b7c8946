"""The fairness page's paired verdicts on runs whose evaluations and per-image predictions are
the engine's own (no training: the scores are simulated with a known improvement)."""

import json
from html import unescape
from pathlib import Path

import numpy as np
import pytest
from django.urls import reverse

from fairskin.classifier.fairness import fairness_report_multiclass, fst_group
from fairskin.classifier.model import CLASS_NAMES
from jobs.models import JobState
from tests.factories import RunFactory, make_user
from training.fairness_verdicts import CRITERIA

pytestmark = pytest.mark.django_db
N = 1500


def scored(sep_by_fst, seed=0, shared_seed=0):
    """Probabilities for N test images: ``sep_by_fst`` on the true class, half shared noise."""
    rng = np.random.default_rng(shared_seed)
    fst = rng.choice([1, 2, 3, 4, 5, 6], N, p=[0.25, 0.25, 0.2, 0.15, 0.1, 0.05])
    labels = rng.choice(7, N, p=[0.4, 0.15, 0.15, 0.12, 0.08, 0.05, 0.05])
    common = rng.normal(size=(N, 7))
    own = np.random.default_rng(seed + 100).normal(size=(N, 7))
    z = np.sqrt(0.5) * (common + own)
    z[np.arange(N), labels] += np.asarray(sep_by_fst)[fst - 1]
    proba = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return fst, labels, proba


def classifier_run(tmp_path, name, fst, labels, proba, *, ids=None, synthetic=False):
    folder = Path(tmp_path, name)
    folder.mkdir()
    ids = ids if ids is not None else [str(i) for i in range(len(labels))]
    folder.joinpath("test_predictions.json").write_text(
        json.dumps(
            {
                "classes": CLASS_NAMES,
                "ids": ids,
                "labels": labels.tolist(),
                "fst": fst.tolist(),
                "proba": proba.tolist(),
            }
        )
    )
    groups = [fst_group(f) for f in fst]
    evaluation = {
        "by_fst": fairness_report_multiclass(labels, proba, fst.tolist(), class_names=CLASS_NAMES),
        "by_fst_group": fairness_report_multiclass(labels, proba, groups, class_names=CLASS_NAMES),
        "test_predictions": {"file": "test_predictions.json", "images": len(ids)},
        "weights_source": "random initialisation",
    }
    return RunFactory(
        kind="classifier",
        name=name,
        job__state=JobState.SUCCEEDED,
        artifacts_dir=str(folder),
        evaluation=json.loads(json.dumps(evaluation, default=str)),
        selection={"synthetic_datasets": ["synth"]} if synthetic else {},
    )


def fairness_page(client, baseline, *others):
    client.force_login(make_user("lead"))
    response = client.get(
        reverse("training:fairness"), {"baseline": baseline.pk, "runs": [r.pk for r in others]}
    )
    assert response.status_code == 200
    return response, unescape(response.content.decode())


def test_a_real_improvement_reads_met_with_its_paired_interval(client, tmp_path):
    unfair = (3.0, 3.0, 2.5, 2.5, 1.0, 1.0)
    baseline = classifier_run(tmp_path, "base", *scored(unfair, seed=1))
    better = classifier_run(tmp_path, "fair", *scored((3.0,) * 6, seed=2), synthetic=True)
    response, html = fairness_page(client, baseline, better)
    criteria = response.context["comparison"]["runs"][0]["criteria"]
    assert [c["state"] for c in criteria] == ["met", "met", "met"]
    gap = criteria[0]
    assert gap["text"].startswith("gap ") and "reduced by" in gap["text"]
    assert "met, the whole interval is above the 40 % reduction target" in gap["text"]
    assert gap["interval"][0] > 0.4
    for c in criteria:
        assert c["text"] in html
    for name in CRITERIA.values():
        assert name in html
    # The reverse comparison is a worsening, and reads as one.
    response, html = fairness_page(client, better, baseline)
    worse = response.context["comparison"]["runs"][0]["criteria"]
    assert [c["state"] for c in worse] == ["not met", "not met", "not met"]
    assert "increased by" in worse[0]["text"] and "reduced by -" not in html


def test_runs_on_other_images_are_refused_and_other_classes_are_marked(client, tmp_path):
    fst, labels, proba = scored((2.0,) * 6, seed=1)
    baseline = classifier_run(tmp_path, "base", fst, labels, proba)
    other_ids = [f"x{i}" for i in range(N)]
    elsewhere = classifier_run(tmp_path, "other", fst, labels, proba, ids=other_ids)
    # A run whose test set lacks class 6 in every FST V–VI image: per-group AUROCs average
    # other classes than the baseline's, so the table marks it not comparable.
    fewer = labels.copy()
    fewer[(fst >= 5) & (fewer == 6)] = 0
    narrower = classifier_run(tmp_path, "narrow", fst, fewer, proba)
    response, html = fairness_page(client, baseline, elsewhere, narrower)
    rows = {r["run"].pk: r for r in response.context["comparison"]["runs"]}
    assert f"Run {elsewhere.pk} cannot be compared with baseline run {baseline.pk}" in html
    assert f"{N} image(s) only in the baseline's, {N} only in the candidate's" in html
    assert {c["state"] for c in rows[elsewhere.pk]["criteria"]} == {"not shown"}
    assert rows[elsewhere.pk]["incomparable"] == ""  # same classes, other images
    # The narrower run is refused too (labels differ) and its figures are marked.
    assert "carry a different label" in rows[narrower.pk]["refusal"]
    assert rows[narrower.pk]["incomparable"].startswith("averages other classes")
    assert "not comparable with the baseline" in html
    assert "per-group AUROCs and the gap average " + ", ".join(CLASS_NAMES) in html


def test_a_pair_is_compared_once_and_again_when_a_run_is_retrained(client, tmp_path, monkeypatch):
    from django.core.cache import cache

    from training import fairness_verdicts

    cache.clear()
    calls = []
    real = fairness_verdicts.paired_comparison

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(fairness_verdicts, "paired_comparison", counting)
    baseline = classifier_run(tmp_path, "base", *scored((3.0, 3.0, 2.5, 2.5, 1.0, 1.0), seed=1))
    better = classifier_run(tmp_path, "fair", *scored((3.0,) * 6, seed=2), synthetic=True)
    first = fairness_page(client, baseline, better)[0].context["comparison"]["runs"][0]
    again = fairness_page(client, baseline, better)[0].context["comparison"]["runs"][0]
    assert len(calls) == 1
    assert again["criteria"] == first["criteria"] and again["paired"] == first["paired"]
    # A retrained candidate has a new predictions file: compared afresh, with its own result.
    fst, labels, proba = scored((1.0,) * 6, seed=3)
    retrained = Path(better.folder, "test_predictions.json")
    data = json.loads(retrained.read_text()) | {"proba": proba.tolist()}
    retrained.write_text(json.dumps(data))
    fresh = fairness_page(client, baseline, better)[0].context["comparison"]["runs"][0]
    assert len(calls) == 2
    assert [c["state"] for c in fresh["criteria"]] != [c["state"] for c in first["criteria"]]
