"""Label conditioning on the tiny model: packed indices, zero start, seeded dropout, the saved
table loaded into a plain diffusers UNet, and guidance with a label scale of its own."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from safetensors import safe_open
from safetensors.torch import load_file

from fairskin.diffusion.base_models import resolve_base_model
from fairskin.diffusion.label_guidance import guided_noise, sample_with_labels, unet_passes
from fairskin.diffusion.labels_conditioning import (
    DX_CLASSES,
    NULL_INDEX,
    NUM_INDICES,
    LabelEmbedding,
    LabelError,
    attach_labels,
    drop_labels,
    label_index,
    label_indices,
    load_labels,
    null_labels,
    save_labels,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return resolve_base_model("tiny", cache_dir=tmp_path_factory.mktemp("models"))


def fresh_unet(tiny):
    return UNet2DConditionModel.from_pretrained(tiny.path, subfolder="unet").eval()


def unet_inputs(unet, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    size = unet.config.sample_size
    latents = torch.randn((n, unet.config.in_channels, size, size), generator=g)
    width = unet.config.cross_attention_dim
    text = torch.randn((n, 77, width), generator=g)
    uncond = torch.randn((n, 77, width), generator=g)
    return latents, text, uncond


def randomise(module: LabelEmbedding, seed=1, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        module.dx.copy_(torch.randn(module.dx.shape, generator=g) * scale)
        module.fst.copy_(torch.randn(module.fst.shape, generator=g) * scale)


def test_packed_indices_cover_every_cell_once_and_refuse_unknown_labels():
    seen = {label_index(dx, fst) for dx in (*DX_CLASSES, None) for fst in (1, 2, 3, 4, 5, 6, None)}
    assert seen == set(range(NUM_INDICES))
    assert label_index(None, None) == NULL_INDEX == NUM_INDICES - 1
    assert label_index("MEL", 1) == 0 and label_index("NV", 6) == 7 + 5
    for bad in [("OTHER", 3), ("mel", 3), ("MEL", 0), ("MEL", 7), ("MEL", True), ("MEL", 2.0)]:
        with pytest.raises(LabelError, match="has no label"):
            label_index(*bad)


def test_vectors_are_the_sum_of_diagnosis_and_skin_type_rows_with_zero_nulls():
    module = LabelEmbedding(8)
    randomise(module)
    out = module(label_indices([("BCC", 4), ("BCC", None), (None, 4), (None, None)]))
    bcc, fst4 = module.dx[DX_CLASSES.index("BCC")], module.fst[3]
    assert torch.allclose(out[0], bcc + fst4)
    assert torch.equal(out[1], bcc) and torch.equal(out[2], fst4)
    assert torch.equal(out[3], torch.zeros(8))
    # A cell that may have no training image (DF x VI) still has its vector.
    df6 = module(label_indices([("DF", 6)]))[0]
    assert torch.allclose(df6, module.dx[DX_CLASSES.index("DF")] + module.fst[5])
    with pytest.raises(LabelError, match="out of range"):
        module(torch.tensor([NUM_INDICES]))


def test_at_initialisation_the_labelled_unet_equals_the_base_model(tiny):
    base, labelled = fresh_unet(tiny), fresh_unet(tiny)
    attach_labels(labelled)
    latents, text, _ = unet_inputs(base)
    t = torch.tensor([10, 500, 900])
    with torch.no_grad():
        expected = base(latents, t, text).sample
        got = labelled(
            latents, t, text, class_labels=label_indices([("MEL", 6), ("NV", 1), (None, None)])
        ).sample
    assert torch.equal(got, expected)
    # ...and once the tables are trained, the labels change the output, the null label does not.
    randomise(labelled.class_embedding, scale=0.5)
    with torch.no_grad():
        changed = labelled(latents, t, text, class_labels=label_indices([("MEL", 6)] * 3)).sample
        null = labelled(latents, t, text, class_labels=null_labels(3)).sample
    assert (changed - expected).abs().max() > 1e-3
    assert torch.equal(null, expected)


def test_attach_refuses_a_unet_with_its_own_class_embedding_or_a_wrong_width(tiny):
    unet = fresh_unet(tiny)
    with pytest.raises(LabelError, match="wide but"):
        attach_labels(unet, LabelEmbedding(5))
    unet.class_embedding = torch.nn.Embedding(3, 4)
    with pytest.raises(LabelError, match="class embedding of its own"):
        attach_labels(unet)


def test_label_dropout_is_seeded_and_drops_at_the_requested_rate():
    labels = torch.full((20_000,), label_index("MEL", 5))
    first = drop_labels(labels, 0.1, torch.Generator().manual_seed(3))
    again = drop_labels(labels, 0.1, torch.Generator().manual_seed(3))
    other = drop_labels(labels, 0.1, torch.Generator().manual_seed(4))
    assert torch.equal(first, again) and not torch.equal(first, other)
    dropped = (first == NULL_INDEX).float().mean().item()
    assert abs(dropped - 0.1) < 0.006  # binomial sd 0.0021: about 3 sd
    assert set(first.tolist()) == {label_index("MEL", 5), NULL_INDEX}
    assert torch.equal(drop_labels(labels, 0.0, torch.Generator().manual_seed(3)), labels)
    with pytest.raises(LabelError, match="dropout"):
        drop_labels(labels, 1.0, torch.Generator())


def test_saved_table_drives_a_fresh_plain_diffusers_unet(tiny, tmp_path):
    trained = fresh_unet(tiny)
    module = attach_labels(trained)
    randomise(module, scale=0.5)
    path = save_labels(tmp_path / "labels.safetensors", module)
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    assert meta["scheme"] == "summed-dx-fst" and json.loads(meta["diagnoses"]) == list(DX_CLASSES)
    assert int(meta["null_index"]) == NULL_INDEX and int(meta["width"]) == module.width

    latents, text, _ = unet_inputs(trained)
    t = torch.tensor([700, 700, 700])
    labels = label_indices([("AK", 2), ("VASC", 6), (None, 3)])
    with torch.no_grad():
        expected = trained(latents, t, text, class_labels=labels).sample
        # FairSkin's loader...
        loaded = fresh_unet(tiny)
        attach_labels(loaded, load_labels(path))
        assert torch.equal(loaded(latents, t, text, class_labels=labels).sample, expected)
        # ...and plain diffusers + safetensors, as the README shows it.
        plain = fresh_unet(tiny)
        plain.class_embedding = torch.nn.Embedding.from_pretrained(load_file(path)["table"])
        assert torch.allclose(
            plain(latents, t, text, class_labels=labels).sample, expected, atol=1e-6
        )


def test_a_label_file_of_another_scheme_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"table": torch.zeros(56, 4)}, str(path), metadata={"scheme": "combined"})
    with pytest.raises(LabelError, match="not a FairSkin label file"):
        load_labels(path)
    with pytest.raises(LabelError, match="no label file"):
        load_labels(tmp_path / "missing.safetensors")


def test_label_scale_zero_is_exactly_plain_guidance_in_two_passes(tiny):
    base, labelled = fresh_unet(tiny), fresh_unet(tiny)
    randomise(attach_labels(labelled), scale=0.5)
    latents, text, uncond = unet_inputs(base)
    labels = label_indices([("MEL", 6)] * 3)
    with torch.no_grad():
        out = base(torch.cat([latents] * 2), 400, torch.cat([uncond, text])).sample
        plain = out[:3] + 7.5 * (out[3:] - out[:3])
        got = guided_noise(
            labelled,
            latents,
            400,
            text=text,
            uncond=uncond,
            labels=labels,
            text_scale=7.5,
            label_scale=0,
        )
        assert torch.equal(got, plain)
        assert unet_passes(0) == 2 and unet_passes(2.0) == 3
        # Label scale: the composition, checked against separate evaluations.
        guided = guided_noise(
            labelled,
            latents,
            400,
            text=text,
            uncond=uncond,
            labels=labels,
            text_scale=7.5,
            label_scale=2.0,
        )
        with_label = labelled(latents, 400, text, class_labels=labels).sample
        expected = plain + 2.0 * (with_label - out[3:])
        assert torch.allclose(guided, expected, atol=1e-5)
        assert (guided - plain).abs().max() > 1e-3
        with pytest.raises(LabelError, match="needs a UNet with labels"):
            guided_noise(
                base,
                latents,
                400,
                text=text,
                uncond=uncond,
                labels=labels,
                text_scale=7.5,
                label_scale=1.0,
            )


def labelled_pipe(tiny, module=None):
    pipe = StableDiffusionPipeline.from_pretrained(
        tiny.path, safety_checker=None, requires_safety_checker=False
    )
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    attach_labels(pipe.unet, module)
    return pipe


def test_sampling_is_seeded_and_the_labels_steer_it(tiny):
    pipe = labelled_pipe(tiny)
    randomise(pipe.unet.class_embedding, scale=2.0)
    prompts = ["a skin lesion"] * 2
    labels = [("MEL", 1), ("MEL", 6)]
    kwargs = {"steps": 4, "seed": 11, "text_scale": 3.0}
    first = sample_with_labels(pipe, prompts, labels, label_scale=2.0, **kwargs)
    again = sample_with_labels(pipe, prompts, labels, label_scale=2.0, **kwargs)
    assert first.shape == (2, 3, 32, 32) and torch.equal(first, again)
    assert 0 <= first.min() and first.max() <= 1
    unguided = sample_with_labels(pipe, prompts, labels, label_scale=0.0, **kwargs)
    assert (first - unguided).abs().max() > 1e-3
    # Unguided labels sample the null label: the same images whatever labels are asked for.
    swapped = sample_with_labels(pipe, prompts, labels[::-1], label_scale=0.0, **kwargs)
    assert torch.equal(unguided, swapped)
    # One image does not depend on its batch neighbours.
    alone = sample_with_labels(pipe, prompts[:1], labels[:1], label_scale=2.0, **kwargs)
    assert torch.allclose(alone[0], first[0], atol=1e-5)
    with pytest.raises(LabelError, match="2 prompts but 1 labels"):
        sample_with_labels(pipe, prompts, labels[:1], **kwargs)
