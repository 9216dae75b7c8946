"""FairSkin's class diversity loss (issue 16, point 5): the planning document's -log(D + eps)
per diagnosis x skin type, the earlier similarity form kept as an option, and the settings."""

import csv
import math

import pytest
import torch

from fairskin.diffusion import config as config_module
from fairskin.diffusion import losses
from fairskin.diffusion.config import ConfigError, TrainConfig
from fairskin.diffusion.losses import DiversityLoss, diversity_group_key

torch.set_num_threads(1)


def pair_at_distance(d, dim=8, seed=0):
    """Two vectors (of different lengths) whose cosine distance is exactly ``d``."""
    g = torch.Generator().manual_seed(seed)
    u = torch.nn.functional.normalize(torch.randn(dim, generator=g, dtype=torch.float64), dim=0)
    w = torch.randn(dim, generator=g, dtype=torch.float64)
    w = torch.nn.functional.normalize(w - (w @ u) * u, dim=0)  # orthogonal to u
    cos = 1 - d
    v = cos * u + math.sqrt(1 - cos**2) * w
    return torch.stack([2.0 * u, 0.5 * v])


def test_value_matches_hand_computation_for_three_samples_of_one_group():
    e = torch.tensor([[1.0, 0.0], [0.0, 3.0], [2.0, 2.0]])  # 0 deg, 90 deg, 45 deg
    c = 1 - 1 / math.sqrt(2)  # cosine distance at 45 degrees
    # Each sample's mean distance to the two others: a: (1 + c)/2, b: (1 + c)/2, c: (c + c)/2.
    d = ((1 + c) / 2 + (1 + c) / 2 + c) / 3
    loss = DiversityLoss(pool_size=16, eps=1e-3)(e, ["MEL:2"] * 3)
    assert loss.item() == pytest.approx(-math.log(d + 1e-3), rel=1e-6)
    similarity = DiversityLoss(pool_size=16, form="similarity")(e, ["MEL:2"] * 3)
    assert similarity.item() == pytest.approx(1 - d, rel=1e-6)


def test_the_pool_supplies_partners_across_calls_and_keeps_only_pool_size():
    loss = DiversityLoss(pool_size=2, eps=1e-3)
    first = loss(torch.tensor([[1.0, 0.0]]), ["NV:5"])  # alone, nothing pooled yet
    assert first.item() == 0.0 and loss.records == [(0.0, None, 0)]
    loss(torch.tensor([[0.0, 1.0]]), ["NV:5"])  # meets (1, 0): distance 1
    third = loss(torch.tensor([[1.0, 1.0]]), ["NV:5"])  # meets (1, 0) and (0, 1): 45 deg each
    c = 1 - 1 / math.sqrt(2)
    assert third.item() == pytest.approx(-math.log(c + 1e-3), rel=1e-6)
    assert len(loss.pools["NV:5"]) == 2  # the oldest, (1, 0), has left
    fourth = loss(torch.tensor([[1.0, 0.0]]), ["NV:5"])  # meets (0, 1) and (1, 1)
    assert fourth.item() == pytest.approx(-math.log((1 + c) / 2 + 1e-3), rel=1e-6)
    # Pooled embeddings are detached: only the batch gets a gradient.
    assert all(not p.requires_grad for p in loss.pools["NV:5"])


@pytest.mark.parametrize(("d", "issue_ratio"), [(0.09, 11), (0.002, 500)])
def test_gradient_is_one_over_d_plus_eps_times_the_similarity_forms(d, issue_ratio):
    # One group of two: the similarity form is 1 - D and the default -log(D + eps), so by the
    # chain rule the gradients point the same way and differ by 1 / (D + eps) exactly.
    def grad(form, eps=1e-3):
        e = pair_at_distance(d).float().requires_grad_(True)
        DiversityLoss(form=form, eps=eps)(e, ["MEL:6", "MEL:6"]).backward()
        return e.grad

    old = grad("similarity")
    for eps in (1e-3, 1e-9):
        new = grad("neg_log_distance", eps)
        ratio = (new.norm() / old.norm()).item()
        assert ratio == pytest.approx(1 / (d + eps), rel=2e-3)
        cosine = torch.nn.functional.cosine_similarity(new.flatten(), old.flatten(), dim=0)
        assert cosine.item() == pytest.approx(1.0, abs=1e-5)
    # Without eps's cap the factor is the issue's 11x (D = 0.09) and ~500x (D = 0.002); the
    # default eps = 1e-3 keeps 11.0x at 0.09 and gives 333x at 0.002 (capped at 1000x).
    assert (new.norm() / old.norm()).item() == pytest.approx(issue_ratio, rel=0.02)


def test_groups_of_one_diagnosis_with_different_skin_types_do_not_interact():
    torch.manual_seed(1)
    light = torch.randn(2, 16)
    dark = torch.randn(2, 16)
    labels = [diversity_group_key("MEL", f, "diagnosis_fst") for f in (1, 1, 6, 6)]
    assert labels == ["MEL:1", "MEL:1", "MEL:6", "MEL:6"]

    def grad_on_light(dark_part, grouping):
        x = torch.cat([light, dark_part]).requires_grad_(True)
        keys = [diversity_group_key("MEL", f, grouping) for f in (1, 1, 6, 6)]
        DiversityLoss(grouping=grouping)(x, keys).backward()
        return x.grad[:2]

    # Per diagnosis x skin type, what the dark-skin samples look like does not move the
    # light-skin ones; grouped by diagnosis only, it does (the check can fail).
    assert torch.allclose(
        grad_on_light(dark, "diagnosis_fst"), grad_on_light(-dark, "diagnosis_fst")
    )
    assert not torch.allclose(grad_on_light(dark, "diagnosis"), grad_on_light(-dark, "diagnosis"))
    # The loss is the mean of the two groups' own terms.
    both = DiversityLoss()(torch.cat([light, dark]), labels)
    alone = [DiversityLoss()(x, [k, k]) for x, k in ((light, "MEL:1"), (dark, "MEL:6"))]
    assert both.item() == pytest.approx((alone[0].item() + alone[1].item()) / 2, rel=1e-6)


def test_group_keys():
    assert diversity_group_key("MEL", 5, "diagnosis_fst") == "MEL:5"
    assert diversity_group_key("MEL", None, "diagnosis_fst") == "MEL:unknown"
    assert diversity_group_key("MEL", 5, "diagnosis") == "MEL"
    with pytest.raises(ValueError, match="grouping must be one of"):
        diversity_group_key("MEL", 5, "fst")


def test_singleton_groups_give_no_term_and_no_pair_anywhere_gives_zero_without_nan():
    torch.manual_seed(2)
    x = torch.randn(3, 8)
    pair_only = DiversityLoss()(x[:2], ["NV:2", "NV:2"])
    with_singleton = DiversityLoss()(x, ["NV:2", "NV:2", "DF:6"])  # DF:6 has no partner
    assert with_singleton.item() == pytest.approx(pair_only.item(), rel=1e-6)

    singles = x.clone().requires_grad_(True)
    loss = DiversityLoss()
    value = loss(singles, ["NV:2", "DF:6", "NV:3"])
    assert value.item() == 0.0
    value.backward()
    assert singles.grad is not None and torch.equal(singles.grad, torch.zeros_like(singles))
    assert loss.records == [(0.0, None, 0)]


@pytest.mark.parametrize("form", ["neg_log_distance", "similarity"])
def test_exact_collapse_is_finite(form):
    same = torch.randn(1, 32).repeat(4, 1).requires_grad_(True)  # identical embeddings
    loss = DiversityLoss(form=form, eps=1e-3)(same, ["BCC:4"] * 4)
    expected = -math.log(1e-3) if form == "neg_log_distance" else 1.0
    assert loss.item() == pytest.approx(expected, abs=1e-3)
    loss.backward()
    assert torch.isfinite(same.grad).all()
    zeros = torch.zeros(2, 8, requires_grad=True)  # zero vectors: F.normalize keeps them 0
    assert torch.isfinite(DiversityLoss()(zeros, ["A:1", "A:1"])).item()


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="form must be one of"):
        DiversityLoss(form="log")
    with pytest.raises(ValueError, match="eps must be positive"):
        DiversityLoss(eps=0)
    with pytest.raises(ValueError, match="3 embeddings but 2 group labels"):
        DiversityLoss()(torch.randn(3, 4), ["A:1", "A:1"])


def test_step_log_averages_micro_batches_and_drops_steps_trained_again(tmp_path):
    path = tmp_path / "diversity.csv"
    loss = DiversityLoss()
    loss.end_step(1, path)
    assert not path.exists()  # the loss was never called (diversity_weight 0)
    e = pair_at_distance(0.5).float()
    loss(e, ["A:1", "A:1"])
    loss(e[:1], ["B:1"])  # no pair: value 0
    loss.end_step(1, path)
    loss(e, ["A:1", "A:1"])
    loss.end_step(2, path)
    rows = list(csv.DictReader(path.open()))
    assert [r["step"] for r in rows] == ["1", "2"]
    assert float(rows[0]["diversity"]) == pytest.approx(-math.log(0.501) / 2, abs=1e-5)
    assert float(rows[0]["mean_distance"]) == pytest.approx(0.5, abs=1e-5)
    assert rows[0]["groups"] == "0.5"
    # A resumed process (new loss object) starting again at step 2 drops the old row 2.
    resumed = DiversityLoss()
    resumed(e, ["A:1", "A:1"])
    resumed.end_step(2, path)
    assert [r["step"] for r in csv.DictReader(path.open())] == ["1", "2"]


def test_settings_default_to_the_plan_round_trip_and_old_configs_load():
    config = TrainConfig.build("lora")
    assert (config.diversity_weight, config.diversity_pool) == (0.1, 16)
    assert (config.diversity_form, config.diversity_eps, config.diversity_group) == (
        "neg_log_distance",
        1e-3,
        "diagnosis_fst",
    )
    assert config_module.DIVERSITY_FORMS == losses.DIVERSITY_FORMS
    assert config_module.DIVERSITY_GROUPS == losses.DIVERSITY_GROUPS
    chosen = TrainConfig.build(
        "lora",
        {"diversity_form": "similarity", "diversity_group": "diagnosis", "diversity_eps": 0.01},
    )
    stored = {k: v for k, v in chosen.to_dict().items() if k != "kind"}
    assert TrainConfig.build("lora", stored) == chosen
    # A run stored before issue 16 has none of the new keys: it loads with the defaults.
    old = {
        k: v
        for k, v in stored.items()
        if not k.startswith(("diversity_form", "diversity_e", "diversity_g"))
    }
    assert TrainConfig.build("lora", old).diversity_form == "neg_log_distance"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"diversity_form": "log"}, "diversity_form must be one of neg_log_distance, similarity"),
        ({"diversity_group": "fst"}, "diversity_group must be one of diagnosis_fst, diagnosis"),
        ({"diversity_eps": 0}, r"diversity_eps must be in \(0, 0.1\], got 0"),
        ({"diversity_eps": 0.5}, r"diversity_eps must be in \(0, 0.1\], got 0.5"),
        ({"diversity_eps": "small"}, "diversity_eps must be a number, got 'small'"),
        ({"diversity_form": 3}, "diversity_form must be text"),
    ],
)
def test_bad_diversity_settings_are_refused_by_name(overrides, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.build("lora", overrides)


def test_a_tiny_model_training_run_uses_and_logs_the_default_diversity_term(tmp_path):
    from fairskin.diffusion.base_models import resolve_base_model
    from fairskin.diffusion.checkpoints import latest_checkpoint
    from fairskin.diffusion.training import TrainItem, train
    from fairskin.imaging.demo import draw_lesion
    from fairskin.progress import SilentProgress

    tiny = resolve_base_model("tiny", cache_dir=tmp_path / "models")
    items = []
    for i, (dx, fst) in enumerate([("MEL", 1), ("MEL", 1), ("MEL", 6), ("NV", 2)]):
        path = tmp_path / f"{i}.png"
        draw_lesion(dx, fst, seed=i, size=64).save(path)
        items.append(TrainItem(str(path), dx, fst))
    fast = {
        "steps": 3,
        "validation_every": 10_000,
        "lr_warmup_steps": 0,
        "grad_accumulation": 1,
        "balanced_sampling": False,
    }

    def run(name, **overrides):
        config = TrainConfig.build("textual_inversion", {**fast, **overrides})
        return train(
            config=config,
            base=tiny,
            items=items,
            run_dir=tmp_path / name,
            progress=SilentProgress(),
        )

    with_term = run("with")
    without = run("without", diversity_weight=0.0)
    rows = list(csv.DictReader((with_term.run_dir / "diversity.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(math.isfinite(float(r["diversity"])) for r in rows)
    assert any(float(r["groups"]) > 0 for r in rows)  # from step 2 on, the pool holds partners
    assert not (without.run_dir / "diversity.csv").exists()
    # Same seed and data: the term changes what is learned.
    table = with_term.text_encoder.get_input_embeddings().weight
    other = without.text_encoder.get_input_embeddings().weight
    assert not torch.allclose(table, other)
    # The pools are kept per diagnosis x skin type.
    state = torch.load(latest_checkpoint(with_term.run_dir) / "state.pt", weights_only=False)
    assert set(state["diversity"]) <= {"MEL:1", "MEL:6", "NV:2"} and state["diversity"]
