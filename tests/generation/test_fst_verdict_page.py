"""The batch page's skin-type section (issue 16): the chart draws the figure each verdict judged,
the rule is stated, and a report stored before the equal-count rule still renders, marked."""

import re

import numpy as np
import pytest
from django.urls import reverse

from fairskin.generation.report import AcceptedImage, batch_report
from fairskin.metrics import StreamingGaussian
from generation.services import batch_create
from tests.factories import make_user

pytestmark = pytest.mark.django_db

CALIBRATED = {name: {"calibrated": True, "label": name} for name in ("inception", "clip")}


def report_for(counts, shifted):
    rng = np.random.default_rng(0)
    images, gaussians, rows = [], {}, {}
    for fst, (n_synthetic, n_real) in counts.items():
        synthetic = rng.normal(size=(n_synthetic, 8)) + shifted.get(fst, 0.0)
        images += [AcceptedImage("MEL", fst, r, rng.normal(size=4), {}) for r in synthetic]
        rows[fst] = rng.normal(size=(n_real, 8))
        gaussians[fst] = StreamingGaussian(8)
        gaussians[fst].update(rows[fst])
    return batch_report(
        images,
        reference=gaussians,
        reference_features=rows,
        provenance=CALIBRATED,
        kid_subsets=2,
    )


def page_for(client, lora_run, report):
    batch = batch_create(model_run=lora_run, target=4, diagnoses=["MEL"], enqueue=False)
    batch.report, batch.provenance = report, CALIBRATED
    batch.save(update_fields=["report", "provenance"])
    client.force_login(make_user("lead"))
    return client.get(reverse("generation:batch", args=[batch.pk])).content.decode()


def test_the_chart_draws_the_judged_figures_and_the_rule_is_stated(client, lora_run):
    # Type 2 identical (met), type 5 shifted by 3 per dimension (FID 72: not met), type 6 with
    # 10 synthetic images (N = 10: not measurable).
    report = report_for({2: (200, 400), 5: (60, 120), 6: (10, 40)}, {5: 3.0})
    page = page_for(client, lora_run, report)
    status = {c["name"]: c["status"] for c in report["criteria"]}
    assert [status[f"FID FST {f}"] for f in (2, 5, 6)] == ["met", "not met", "not measurable"]
    chart = re.search(r'<svg data-testid="fst-chart".*?</svg>', page, re.S).group(0)
    drawn = [float(v) for v in re.findall(r'data-value="([^"]+)"', chart)]
    assert drawn == [row["figure"] for row in report["fst"]]
    assert re.findall(r">(met|not met|n/m)</text>", chart) == ["met", "not met", "n/m"]
    for row in report["fst"]:
        table_row = re.search(rf'<tr data-testid="fst-{row["fst"]}">.*?</tr>', page, re.S)
        assert f"<strong>{row['status']}</strong>" in table_row.group(0)
    rule = re.search(r'data-testid="fst-rule">(.*?)</p>', page, re.S).group(1)
    assert "N = min(synthetic images kept, real images kept // 2)" in rule
    assert "fewer than 20 images per subset is not measurable" in rule
    assert 'data-testid="old-fst-format"' not in page


def test_a_report_stored_before_the_rule_renders_marked(client, lora_run):
    old = {
        "fst": [
            {"fst": 2, "n": 500, "fid": 1.5, "fid_equal_n": 28.0, "kid": 0.001, "kid_std": 0.0},
            {"fst": 6, "n": 30, "fid": 31.7, "fid_equal_n": 31.7, "kid": 0.002, "kid_std": 0.0},
        ],
        "equal_n": 30,
        "overall": {"n": 530, "fid": 2.0, "kid": 0.001},
        "diversity": {},
        "criteria": [
            {
                "name": "FID FST 6",
                "what": "Fréchet distance to the real images of this type",
                "value": 31.7,
                "limit": 25.0,
                "comparison": "<",
                "status": "not met",
                "why": "",
            }
        ],
    }
    page = page_for(client, lora_run, old)
    assert 'data-testid="old-fst-format"' in page and "Report format 1" in page
    assert 'data-testid="fst-chart"' not in page
    assert "31.70" in page and "at equal n (30)" in page
