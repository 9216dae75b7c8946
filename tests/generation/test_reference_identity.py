"""Issue 15: a batch's folder is its own, its scoring reference records the batch's identity,
and a shard refuses a reference that is not its batch's (a folder left by an earlier database,
or copied in by hand) before loading any model."""

import shutil
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command

from fairskin.provenance import IdentityMismatch, read_identity
from generation.models import Batch
from generation.services import batch_create
from generation.work import _scorer, reference_folder

pytestmark = pytest.mark.django_db


def test_a_shard_refuses_a_reference_that_is_not_its_batchs(capsys, lora_run):
    call_command(
        "generate",
        "--model",
        str(lora_run.pk),
        "--count",
        "4",
        "--diagnosis",
        "MEL",
        "--steps",
        "2",
        "--wait",
    )
    first = Batch.objects.get(pk=int(capsys.readouterr().out.strip().splitlines()[-1]))
    assert first.identity.startswith(f"batch-{first.pk}-")
    assert Path(first.folder).name == first.identity
    assert read_identity(Path(first.folder) / "reference") == {"batch": first.identity}
    assert reference_folder(first) == Path(first.folder) / "reference"

    # An earlier database's batch with the next id left its folder under the old name.
    left = Path(settings.FAIRSKIN_ARTIFACTS_ROOT) / "batches" / f"batch-{first.pk + 1}"
    shutil.copytree(Path(first.folder) / "reference", left / "reference")
    second = batch_create(model_run=lora_run, target=4, diagnoses=["MEL"], enqueue=False)
    assert second.pk == first.pk + 1 and Path(second.folder) != left
    assert not Path(second.folder).exists()

    # Another batch's reference put into this batch's folder is refused by name.
    shutil.copytree(left / "reference", Path(second.folder) / "reference")
    with pytest.raises(IdentityMismatch, match=f"recorded '{first.identity}'"):
        _scorer(second)
    # A reference with no record is refused too, in a folder named the new way.
    (Path(second.folder) / "reference" / "identity.json").unlink()
    with pytest.raises(IdentityMismatch, match="no identity record"):
        reference_folder(second)
