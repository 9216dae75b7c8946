"""Classifier training on procedural demo images, on CPU."""

from collections import Counter

import pytest
import torch

from fairskin.classifier.config import ClassifierConfig, ClassifierConfigError
from fairskin.classifier.data import ClassifierItem, mixture_weights
from fairskin.classifier.evaluation import PHASE_EVALUATING
from fairskin.classifier.model import CLASS_NAMES, build_classifier, reverse_gradient
from fairskin.classifier.train import (
    PHASE_LOADING,
    PHASE_NAMES,
    load_classifier,
    train_classifier,
)
from fairskin.imaging.demo import demo_items
from fairskin.progress import JobCancelled, SilentProgress
from tests.fairskin.recording import RecordingProgress

torch.set_num_threads(1)
QUICK = {
    "image_size": 64,
    "batch_size": 16,
    "bootstrap": 50,
    "arch": "resnet18",
    "learning_rate": 1e-3,
    "final_learning_rate": 1e-4,
}


def draw(folder, per_class, seed, *, synthetic=False):
    items = []
    for item in demo_items(per_class, seed, size=64):
        path = folder / f"{seed}-{item.file_name}"
        item.image.save(path)
        items.append(
            ClassifierItem(
                str(path), CLASS_NAMES.index(item.diagnosis.value), item.fst, synthetic=synthetic
            )
        )
    return items


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clf")
    return draw(folder, 12, 1), draw(folder, 6, 2), draw(folder, 6, 3, synthetic=True)


def test_classifier_learns_well_above_chance_on_demo_images(data, tmp_path):
    train, test, _ = data
    result = train_classifier(
        config=ClassifierConfig.build({**QUICK, "epochs": 8}),
        train_items=train,
        test_items=test,
        run_dir=tmp_path,
        progress=SilentProgress(),
    )
    by_fst = result.evaluation["by_fst"]
    assert by_fst["accuracy"] > 2 / 7  # chance is 1/7
    assert by_fst["auroc"] > 0.75
    assert set(result.evaluation["by_fst_group"]["auroc_by_group"]) == {"I–II", "III–IV", "V–VI"}
    assert "random initialisation" in result.weights_source
    model, manifest = load_classifier(tmp_path)
    assert manifest["classes"] == CLASS_NAMES
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(model(x), result.model.eval()(x), atol=1e-5)


def test_mixture_realises_the_configured_synthetic_share_per_fst(data):
    train, _, synthetic = data
    items = train + synthetic
    shares = {1: 0.2, 2: 0.2, 3: 0.3, 4: 0.5, 5: 0.7, 6: 0.8}
    weights = mixture_weights(items, shares)
    draws = torch.multinomial(
        weights, 60_000, replacement=True, generator=torch.Generator().manual_seed(0)
    )
    drawn = Counter()
    synthetic_drawn = Counter()
    for i in draws.tolist():
        drawn[items[i].fst] += 1
        synthetic_drawn[items[i].fst] += items[i].synthetic
    for fst, share in shares.items():
        assert synthetic_drawn[fst] / drawn[fst] == pytest.approx(share, abs=0.02), fst


def test_ramp_grows_the_share_over_epochs(data):
    train, _, synthetic = data
    items = train + synthetic
    shares = {f: 0.8 for f in range(1, 7)}

    def share_at(epoch):
        w = mixture_weights(items, shares, epoch=epoch, ramp_epochs=4)
        return float(w[[i.synthetic for i in items]].sum() / w.sum())

    assert share_at(0) == pytest.approx(0.2, abs=1e-6)
    assert share_at(1) == pytest.approx(0.4, abs=1e-6)
    assert share_at(3) == pytest.approx(0.8, abs=1e-6)
    assert share_at(9) == pytest.approx(0.8, abs=1e-6)


def test_gradient_reversal_really_reverses_the_gradient():
    x = torch.randn(5, 3, requires_grad=True)
    (reverse_gradient(x, 0.5) * torch.arange(3.0)).sum().backward()
    assert torch.allclose(x.grad, -0.5 * torch.arange(3.0).expand(5, 3))
    y = torch.randn(5, 3, requires_grad=True)
    assert torch.equal(reverse_gradient(y, 0.5), y)  # identity forwards


class CancelAt(RecordingProgress):
    """Cancels when the count of the named phase reaches ``at``."""

    def __init__(self, phase, at):
        super().__init__()
        self.phase_name, self.at = phase, at

    def update(self, done, total, message=""):
        super().update(done, total, message)
        if self.recorded[-1].name == self.phase_name and done == self.at:
            raise JobCancelled("cancelled")


def test_all_three_phases_run_and_a_cancelled_run_resumes_after_its_last_epoch(data, tmp_path):
    train, test, synthetic = data
    config = ClassifierConfig.build({**QUICK, "pretrain_epochs": 1, "epochs": 2, "dann_epochs": 1})
    items = train + synthetic
    batches_per_epoch = -(-len(items) // 16)
    finetune, dann = PHASE_NAMES["finetune"], PHASE_NAMES["dann"]
    cancelled = CancelAt(finetune, batches_per_epoch + 2)
    with pytest.raises(JobCancelled):  # stop mid-way through the second fine-tuning epoch
        train_classifier(
            config=config, train_items=items, test_items=test, run_dir=tmp_path, progress=cancelled
        )
    # Each training phase is counted in its own batches, the message naming the epoch.
    assert [p.name for p in cancelled.recorded] == [
        PHASE_LOADING,
        PHASE_NAMES["pretrain"],
        finetune,
    ]
    pretrain = cancelled.recorded[1]
    assert pretrain.total == -(-len(synthetic) // 16) == pretrain.last_done
    assert cancelled.recorded[2].total == 2 * batches_per_epoch
    assert cancelled.recorded[2].updates[-1][2].startswith("epoch 2/2 · loss ")
    resumed = RecordingProgress()
    result = train_classifier(
        config=config, train_items=items, test_items=test, run_dir=tmp_path, progress=resumed
    )
    assert result.resumed_from == ("finetune", 0)
    assert [p.name for p in resumed.recorded] == [PHASE_LOADING, finetune, dann, PHASE_EVALUATING]
    # The resumed phase starts past its finished epoch; evaluation counts the test images.
    assert (resumed.recorded[1].start, resumed.recorded[1].total) == (
        batches_per_epoch,
        2 * batches_per_epoch,
    )
    assert resumed.recorded[1].last_done == 2 * batches_per_epoch
    evaluating = resumed.recorded[3]
    assert evaluating.total == len(test) == evaluating.last_done
    assert (tmp_path / "classifier.pt").exists()
    assert result.evaluation["by_fst"]["n"] == len(test)


def test_binary_malignancy_view_where_the_dataset_records_it(data, tmp_path):
    train, test, _ = data
    flagged = [
        ClassifierItem(i.path, i.label, i.fst, malignant=CLASS_NAMES[i.label] in ("MEL", "BCC"))
        for i in test
    ]
    result = train_classifier(
        config=ClassifierConfig.build({**QUICK, "epochs": 1}),
        train_items=train,
        test_items=flagged,
        run_dir=tmp_path,
        progress=SilentProgress(),
    )
    binary = result.evaluation["malignant_vs_benign"]
    assert set(binary["auroc_by_group"]) == {"I–II", "III–IV", "V–VI"}
    assert "equalized_odds_difference" in binary


@pytest.mark.parametrize(
    "bad",
    [
        {"epochs": 0},
        {"learning_rate": 0},
        {"arch": "vit"},
        {"synthetic_shares": {"7": 0.5}},
        {"nope": 1},
    ],
)
def test_bad_classifier_configs_are_refused(bad):
    with pytest.raises(ClassifierConfigError):
        ClassifierConfig.build(bad)


def test_resnet50_loads_local_imagenet_weights_and_records_them(tmp_path):
    from torchvision.models import resnet50

    reference = resnet50(weights=None)
    path = tmp_path / "resnet50-local.pth"
    torch.save(reference.state_dict(), path)
    model, source = build_classifier(weights=str(path))
    assert source.startswith("imagenet: resnet50-local.pth (sha256 ")
    assert torch.equal(model.backbone.conv1.weight, reference.conv1.weight)
    assert model.head.out_features == 7
