from collections import Counter

import pytest
import torch

from fairskin.diffusion.config import ConfigError, TrainConfig
from fairskin.diffusion.losses import DiversityLoss, min_snr_weights
from fairskin.diffusion.sampling import BatchSampler
from fairskin.diffusion.tokens import plan_tokens, prompt_for

torch.set_num_threads(1)


def test_defaults_are_the_planning_documents():
    ti = TrainConfig.build("textual_inversion")
    assert (ti.learning_rate, ti.steps, ti.batch_size, ti.grad_accumulation) == (5e-4, 2000, 4, 2)
    assert (ti.lr_scheduler, ti.lr_warmup_steps, ti.weight_decay, ti.max_grad_norm) == (
        "constant_with_warmup",
        100,
        0.01,
        1.0,
    )
    lora = TrainConfig.build("lora")
    assert (lora.lora_rank, lora.lora_alpha, lora.lora_dropout) == (16, 32.0, 0.1)
    assert (lora.learning_rate, lora.steps, lora.lr_scheduler, lora.lr_num_cycles) == (
        1e-4,
        10_000,
        "cosine_with_restarts",
        3,
    )
    # The plan adapts cross-attention (attn2); docs/validation/lora-targets.md.
    assert lora.lora_targets == ("attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0")
    assert lora.snr_gamma == 5.0
    assert lora.fst_shares == {"1-3": 0.4, "4": 0.2, "5-6": 0.4}
    assert (lora.diversity_weight, lora.diversity_pool) == (0.1, 16)
    assert (lora.diversity_form, lora.diversity_group) == ("neg_log_distance", "diagnosis_fst")


@pytest.mark.parametrize(
    ("kind", "overrides", "message"),
    [
        ("lora", {"lora_rank": 0}, "lora_rank"),
        ("lora", {"lora_rank": -4}, "lora_rank"),
        ("textual_inversion", {"learning_rate": 0}, "learning_rate"),
        ("textual_inversion", {"learning_rate": -1e-4}, "learning_rate"),
        ("lora", {"lora_targets": ["to_q", "to_z"]}, "to_z"),
        ("lora", {"lora_targets": []}, "target"),
        ("lora", {"fst_shares": {"1-3": 0.5, "4": 0.5, "5-6": 0.5}}, "fst_shares"),
        ("lora", {"mixed_precision": "fp8"}, "mixed_precision"),
        ("lora", {"no_such_setting": 1}, "unknown setting"),
        ("portrait", {}, "unknown run kind"),
    ],
)
def test_bad_configs_are_refused_with_the_reason(kind, overrides, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.build(kind, overrides)


def test_balanced_sampler_matches_its_shares_on_skewed_data():
    # 90% light skin, as in Fitzpatrick17k; balanced batches must not follow the data.
    fsts = [1] * 500 + [2] * 300 + [3] * 100 + [4] * 60 + [5] * 30 + [6] * 10
    sampler = BatchSampler(fsts, batch_size=4, seed=3, shares={"1-3": 0.4, "4": 0.2, "5-6": 0.4})
    drawn = Counter()
    for _ in range(5000):
        for i in sampler.next_batch():
            drawn["1-3" if fsts[i] <= 3 else "4" if fsts[i] == 4 else "5-6"] += 1
    total = sum(drawn.values())
    assert drawn["1-3"] / total == pytest.approx(0.4, abs=0.015)
    assert drawn["4"] / total == pytest.approx(0.2, abs=0.015)
    assert drawn["5-6"] / total == pytest.approx(0.4, abs=0.015)


def test_sampler_renormalises_when_a_group_is_empty_and_resumes_exactly():
    fsts = [1, 2, 5, 6]
    sampler = BatchSampler(fsts, batch_size=4, seed=0, shares={"1-3": 0.4, "4": 0.2, "5-6": 0.4})
    assert sampler.weights == pytest.approx([0.5, 0.5])
    state = sampler.state()
    first = [sampler.next_batch() for _ in range(5)]
    sampler.restore(state)
    assert [sampler.next_batch() for _ in range(5)] == first


def test_similarity_form_is_higher_for_identical_than_for_varied_samples():
    # The form before issue 16 (mean cosine similarity), kept as diversity_form "similarity";
    # the default -log(D + eps) is tested in test_diversity_loss.py.
    torch.manual_seed(0)
    same = torch.randn(1, 64).repeat(4, 1)
    varied = torch.randn(4, 64)
    labels = ["MEL"] * 4
    identical_loss = DiversityLoss(pool_size=16, form="similarity")(same, labels)
    varied_loss = DiversityLoss(pool_size=16, form="similarity")(varied, labels)
    assert identical_loss.item() == pytest.approx(1.0, abs=1e-5)
    assert varied_loss.item() < 0.5


def test_similarity_form_compares_only_same_class_and_uses_the_pool():
    loss = DiversityLoss(pool_size=2, form="similarity")
    x = torch.randn(2, 8, requires_grad=True)
    first = loss(x, ["MEL", "NV"])  # no same-class partner yet: contributes nothing
    assert first.item() == 0.0
    second = loss(x, ["MEL", "NV"])  # now each meets its own earlier copy in the pool
    assert second.item() == pytest.approx(1.0, abs=1e-5)
    second.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert len(loss.pools["MEL"]) == 2


def test_min_snr_weights_cap_low_noise_steps():
    snr = torch.tensor([0.5, 5.0, 50.0])
    assert min_snr_weights(snr, 5.0).tolist() == pytest.approx([1.0, 1.0, 0.1])


def test_compositional_tokens_compose_cells_never_seen_together():
    tokens = plan_tokens([("DF", 2), ("MEL", 6)], mode="compositional", per_cell_min_images=1)
    assert set(tokens) == {"<dx-df>", "<dx-mel>", "<fst-2>", "<fst-6>"}
    prompt = prompt_for("DF", 6, available=tokens)  # DF x VI: no such training image
    assert prompt == (
        "A dermoscopic image of <dx-df> on Fitzpatrick skin type <fst-6>, "
        "high quality medical photograph"
    )


def test_per_cell_tokens_only_for_cells_with_enough_images():
    cells = [("MEL", 6)] * 5 + [("NV", 1)] * 2
    tokens = plan_tokens(cells, mode="per_cell", per_cell_min_images=3)
    assert "<mel-fst6>" in tokens and "<nv-fst1>" not in tokens
    assert prompt_for("MEL", 6, available=tokens).startswith("A dermoscopic image of <mel-fst6>")
    assert "<dx-nv>" in prompt_for("NV", 1, available=tokens)


def test_every_initialiser_word_is_one_clip_token(tmp_path):
    from transformers import CLIPTokenizer

    from fairskin.diffusion.tokenizer import write_clip_tokenizer
    from fairskin.diffusion.tokens import DIAGNOSIS_INIT, FST_INIT

    tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer(tmp_path))
    for word in [*DIAGNOSIS_INIT.values(), *FST_INIT.values()]:
        assert len(tokenizer.encode(word, add_special_tokens=False)) == 1, word
