"""One generation spec behind every entry point: the service refuses what is outside it with a
clear message, the launch form takes its limits and initial values from it, the `generate`
command and the Batch model their defaults. And the `--set` parser both commands share."""

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from catalog.models import Dataset
from fairskin.generation.spec import SPEC
from generation.forms import BatchLaunchForm
from generation.management.commands.generate import Command as GenerateCommand
from generation.models import Batch
from generation.services import BatchConfigError, batch_create
from jobs.models import Job, JobState
from tests.factories import RunFactory, make_user
from training.models import Run

pytestmark = pytest.mark.django_db

SETTINGS = [
    "target",
    "overgeneration",
    "scheduler",
    "steps",
    "guidance",
    "seed",
    "shard_size",
    "device_batch",
    "negative_prompt",
    "name",
    "filter_percentile",
]


@pytest.fixture
def lora_model(tmp_path):
    """A finished LoRA run and its textual-inversion parent, as far as validation looks."""
    parent = RunFactory(
        kind="textual_inversion", job__state=JobState.SUCCEEDED, artifacts_dir=str(tmp_path)
    )
    return RunFactory(
        kind="lora", parent=parent, job__state=JobState.SUCCEEDED, artifacts_dir=str(tmp_path)
    )


def _counts():
    return Batch.objects.count(), Job.objects.count(), Dataset.objects.count()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"target": 1_000_001}, "the target must be positive and at most 1000000, got 1000001"),
        ({"target": 2.5}, "the target must be a whole number, got 2.5"),
        ({"overgeneration": float("inf")}, "the over-generation cap must be a number, got inf"),
        ({"steps": 1001}, "steps must be positive and at most 1000, got 1001"),
        ({"guidance": 50.5}, "guidance must be from 0 to 50, got 50.5"),
        ({"size": 1032}, "the image size must be a multiple of 8 from 8 to 1024, got 1032"),
        ({"seed": 2**32}, "the seed must be from 0 to 4294967295, got 4294967296"),
        ({"shard_size": 0}, "the shard size must be positive and at most 10000, got 0"),
        ({"device_batch": 257}, "the device batch must be positive and at most 256, got 257"),
        ({"filter_percentile": 40}, "the filter percentile must be from 50 to 100, got 40"),
        ({"filter_percentile": "high"}, "the filter percentile must be a number, got 'high'"),
        # Stored in columns of 120 and 500 characters: refused here, not by the database.
        ({"name": "n" * 121}, "the name must be at most 120 characters, not 121"),
        ({"negative_prompt": "p" * 501}, "the negative prompt must be at most 500 characters"),
    ],
)
def test_the_service_refuses_values_outside_the_spec_by_name(lora_model, change, message):
    before = _counts()
    with pytest.raises(BatchConfigError) as err:
        batch_create(**{"model_run": lora_model, "target": 4, "diagnoses": ["MEL"], **change})
    assert message in str(err.value)
    assert _counts() == before


def test_every_problem_is_named_at_once(lora_model):
    with pytest.raises(BatchConfigError) as err:
        batch_create(
            model_run=lora_model,
            target=4,
            diagnoses=["MEL"],
            steps=0,
            scheduler="euler",
            device_batch=0,
        )
    assert str(err.value).split("; ") == [
        "unknown scheduler 'euler' (choose one of ddpm, ddim, dpm-solver++, unipc)",
        "steps must be positive and at most 1000, got 0",
        "the device batch must be positive and at most 256, got 0",
    ]


def test_the_launch_form_takes_its_limits_and_initial_values_from_the_spec(client):
    form = BatchLaunchForm()
    for name in SETTINGS:
        field, setting = form.fields[name], getattr(SPEC, name)
        if name in ("negative_prompt", "name"):
            assert field.max_length == setting.max_length
            assert field.initial == (setting.default or None), name  # no name: blank
            continue
        if name == "scheduler":
            assert [c for c, _ in field.choices] == list(setting.choices)
        else:
            assert (field.min_value, field.max_value) == (setting.low, setting.high), name
        assert field.initial == setting.default, name
    size = form.fields["size"]
    assert (size.min_value, size.max_value, size.step_size, size.initial) == (8, 1024, 8, None)
    assert {fst: form.fields[f"fst_{fst}"].initial for fst in range(1, 7)} == dict(
        SPEC.fst_distribution
    )

    client.force_login(make_user("engineer"))
    page = client.get(reverse("admin:generation_batch_launch")).content.decode()
    assert 'name="steps" value="50" min="1" max="1000"' in page
    assert 'name="target" value="60" min="1" max="1000000"' in page
    assert 'name="size" min="8" max="1024" step="8"' in page


def test_the_form_refuses_what_the_spec_refuses(client, lora_model):
    client.force_login(make_user("engineer"))
    data = {
        "model_run": lora_model.pk,
        "target": 4,
        "overgeneration": 1.5,
        "scheduler": "ddim",
        "steps": 2,
        "guidance": 7.5,
        "seed": 0,
        "shard_size": 8,
        "device_batch": 2,
        "scoring": "{}",
        "filter_percentile": 95,
        "size": 36,
        **{f"fst_{f}": s for f, s in SPEC.fst_distribution.items()},
    }
    before = _counts()
    page = client.post(reverse("admin:generation_batch_launch"), data)
    assert page.status_code == 200 and "multiple of step size 8" in page.content.decode()
    assert _counts() == before


def test_the_generate_command_and_the_model_default_to_the_spec():
    parser = GenerateCommand().create_parser("manage.py", "generate")
    options = vars(parser.parse_args(["--model", "1", "--count", "4"]))
    for name in SETTINGS:
        if name in ("target", "negative_prompt"):
            continue  # --count is required; None is the spec's negative prompt
        assert options[name] == getattr(SPEC, name).default, name
    assert options["negative_prompt"] is None and options["size"] is None
    fields = {f.name: f for f in Batch._meta.get_fields() if hasattr(f, "default")}
    for name in SETTINGS:
        if name != "target":
            assert fields[name].get_default() == getattr(SPEC, name).default, name
    assert fields["name"].max_length == SPEC.name.max_length
    assert fields["negative_prompt"].max_length == SPEC.negative_prompt.max_length
    assert Batch._meta.get_field("fst_distribution").get_default() == {
        str(fst): share for fst, share in SPEC.fst_distribution.items()
    }


def test_the_generate_command_refuses_bad_items_before_the_service(lora_model):
    before = _counts()
    for args, message in [
        (
            ["--set", "confidence=0.7", "--set", "confidence=0.8"],
            "scoring setting confidence is given more than once",
        ),
        (
            ["--set", "confidense=0.7"],
            "unknown scoring setting(s): confidense (did you mean confidence?)",
        ),
        (["--set", "confidence"], "--set takes KEY=VALUE, got 'confidence'"),
        (["--steps", "0"], "steps must be positive and at most 1000, got 0"),
    ]:
        with pytest.raises(CommandError) as err:
            call_command("generate", "--model", str(lora_model.pk), "--count", "4", *args)
        assert message in str(err.value) and "Nothing was queued" in str(err.value), args
    with pytest.raises(CommandError, match="gives FST 5 more than once"):
        call_command(
            "generate",
            "--model",
            str(lora_model.pk),
            "--count",
            "4",
            "--fst-distribution",
            "5=0.5,5=0.5",
        )
    assert _counts() == before


def test_the_train_command_shares_the_parser(demo_dataset):
    before = Run.objects.count(), Job.objects.count()
    for args, message in [
        (
            ["--set", "lora_rank=8", "--set", "lora_rank=4"],
            "setting lora_rank is given more than once",
        ),
        (["--set", "lora_rnk=8"], "unknown setting(s): lora_rnk (did you mean lora_rank?)"),
        # The kind is --kind's: a --set kind would train another kind than the run says.
        (["--set", "kind=joint"], "unknown setting(s): kind"),
        (["--set", "steps=abc"], "steps must be a whole number, got 'abc'"),
    ]:
        with pytest.raises(CommandError) as err:
            call_command("train", "--kind", "lora", "--dataset", "demo", *args)
        assert message in str(err.value) and "Nothing was queued" in str(err.value), args
    with pytest.raises(CommandError, match=r"unknown setting\(s\): lora_rank"):
        call_command("train", "--kind", "classifier", "--dataset", "demo", "--set", "lora_rank=8")
    assert (Run.objects.count(), Job.objects.count()) == before


@pytest.fixture
def demo_dataset():
    return Dataset.objects.create(name="demo", source_format="csv")
