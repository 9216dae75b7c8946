"""The generation spec: one default and one set of bounds per batch setting."""

import dataclasses

import pytest

from fairskin.generation.options import SCHEDULERS
from fairskin.generation.spec import SPEC, GenerationSpec, Number, Whole

GOOD = {
    "target": 60,
    "overgeneration": 1.5,
    "scheduler": "ddim",
    "steps": 50,
    "guidance": 7.5,
    "size": 512,
    "seed": 0,
    "shard_size": 64,
    "device_batch": 8,
    "name": "",
    "negative_prompt": "blurry",
}


def test_the_defaults_are_the_planning_documents_and_within_their_own_bounds():
    assert (
        SPEC.target.default,
        SPEC.overgeneration.default,
        SPEC.scheduler.default,
        SPEC.steps.default,
        SPEC.guidance.default,
        SPEC.seed.default,
        SPEC.shard_size.default,
        SPEC.device_batch.default,
    ) == (60, 1.5, "ddim", 50, 7.5, 0, 64, 8)
    assert SPEC.negative_prompt.default == "blurry, low quality, text, watermark, duplicated"
    assert dict(SPEC.fst_distribution) == {1: 0.10, 2: 0.10, 3: 0.15, 4: 0.15, 5: 0.25, 6: 0.25}
    assert SPEC.scheduler.choices == tuple(SCHEDULERS)
    defaults = {
        f.name: getattr(SPEC, f.name).default
        for f in dataclasses.fields(SPEC)
        if f.name != "fst_distribution"
    }
    assert SPEC.problems(defaults) == []
    assert SPEC.problems(GOOD) == []


def test_the_spec_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SPEC.steps = Whole("steps", default=5, low=1, high=10)  # type: ignore[misc]
    with pytest.raises(TypeError):
        SPEC.fst_distribution[1] = 0.5  # type: ignore[index]
    assert GenerationSpec() == SPEC


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("target", 0, "the target must be positive and at most 1000000, got 0"),
        ("target", 1_000_001, "the target must be positive and at most 1000000"),
        ("target", True, "the target must be a whole number, got True"),
        ("target", 2.0, "the target must be a whole number, got 2.0"),
        ("overgeneration", 0.5, "the over-generation cap must be at least 1x, got 0.5"),
        ("overgeneration", float("inf"), "the over-generation cap must be a number, got inf"),
        (
            "scheduler",
            "euler",
            "unknown scheduler 'euler' (choose one of ddpm, ddim, dpm-solver++, unipc)",
        ),
        ("steps", 0, "steps must be positive and at most 1000, got 0"),
        ("steps", 1001, "steps must be positive and at most 1000, got 1001"),
        ("guidance", -1, "guidance must be from 0 to 50, got -1"),
        ("guidance", float("nan"), "guidance must be a number, got nan"),
        ("size", 30, "the image size must be a multiple of 8 from 8 to 1024, got 30"),
        ("size", 1032, "the image size must be a multiple of 8 from 8 to 1024, got 1032"),
        ("seed", -1, "the seed must be from 0 to 4294967295, got -1"),
        ("seed", 2**32, "the seed must be from 0 to 4294967295"),
        ("shard_size", 10_001, "the shard size must be positive and at most 10000"),
        ("device_batch", 257, "the device batch must be positive and at most 256"),
        ("name", "x" * 121, "the name must be at most 120 characters, not 121"),
        ("negative_prompt", "x" * 501, "the negative prompt must be at most 500 characters"),
        ("negative_prompt", "a\x00b", "the negative prompt must be text without NUL bytes"),
    ],
)
def test_values_outside_the_bounds_are_named(name, value, message):
    problems = SPEC.problems({**GOOD, name: value})
    assert len(problems) == 1 and problems[0].startswith(message), problems


def test_every_problem_is_reported_in_order_and_unknown_names_are_a_programming_error():
    assert SPEC.problems({"steps": 0, "seed": -1}) == [
        "steps must be positive and at most 1000, got 0",
        "the seed must be from 0 to 4294967295, got -1",
    ]
    with pytest.raises(ValueError, match="not a bounded generation setting"):
        SPEC.problems({"sharpness": 1})
    with pytest.raises(ValueError, match="not a bounded"):
        SPEC.problems({"fst_distribution": {}})


def test_bounds_are_inclusive():
    assert Whole("n", default=1, low=1, high=3).problem(3) is None
    assert Number("x", default=0, low=0, high=1).problem(1) is None
    assert Number("x", default=1, low=1, unit="x").problem(10**6) is None
