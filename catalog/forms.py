import zipfile
from typing import Any

from django import forms
from django.conf import settings

from catalog import importing
from catalog.models import AllowedUse
from fairskin.datasets import FORMATS, ArchiveError
from fairskin.datasets.sources import ZipImages


class DatasetUploadForm(forms.Form):
    """An admin upload: the metadata is parsed here, so a bad file is refused on the form."""

    format = forms.ChoiceField(choices=[(f, f) for f in FORMATS])
    name = forms.SlugField(
        max_length=64, required=False, help_text="Dataset name; the format's name when empty."
    )
    mapping = forms.ChoiceField(
        choices=[("strict", "strict"), ("broad", "broad")], initial="strict"
    )
    allowed_use = forms.ChoiceField(
        choices=[("", "format default"), *AllowedUse.choices], required=False
    )
    licence = forms.CharField(
        max_length=200,
        required=False,
        help_text="Licence of the data; the format's default when empty.",
    )
    metadata = forms.FileField(help_text="The dataset's metadata CSV.")
    images = forms.FileField(required=False, help_text="Optional zip archive of the images.")

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        metadata = data.get("metadata")
        if metadata is None or not data.get("format"):
            return data
        limit = settings.FAIRSKIN_MAX_METADATA_BYTES
        if metadata.size > limit:
            raise forms.ValidationError(
                f"{metadata.name} is {metadata.size / 2**20:.1f} MiB; metadata files are "
                f"limited to {limit / 2**20:.0f} MiB (FAIRSKIN_MAX_METADATA_BYTES)"
            )
        try:
            importing.dataset_metadata_parse(
                fmt=data["format"],
                metadata=metadata.read(),
                metadata_name=metadata.name,
                mapping=data["mapping"],
            )
        except importing.CatalogImportError as exc:
            raise forms.ValidationError(str(exc)) from exc
        finally:
            metadata.seek(0)
        images = data.get("images")
        if images is not None:
            if images.size > settings.FAIRSKIN_MAX_UPLOAD_BYTES:
                raise forms.ValidationError("the image archive is larger than the upload limit")
            if not zipfile.is_zipfile(images):
                raise forms.ValidationError(f"{images.name} is not a zip archive")
            try:
                ZipImages(images).close()
                images.seek(0)
                importing.image_archive_check(archive=images, archive_name=images.name)
            except ArchiveError as exc:
                raise forms.ValidationError(f"{images.name}: {exc}") from exc
            except importing.CatalogImportError as exc:
                raise forms.ValidationError(str(exc)) from exc
            finally:
                images.seek(0)
        return data


def upload_launch_kwargs(data: dict[str, Any]) -> dict[str, Any]:
    """A valid DatasetUploadForm's data as ``catalog.services.dataset_upload_launch`` takes it
    (less ``user``): the admin's import page and the API import alike."""
    keys = ("name", "mapping", "allowed_use", "licence", "metadata", "images")
    return {"fmt": data["format"], **{key: data[key] for key in keys}}


class SplitForm(forms.Form):
    seed = forms.IntegerField(initial=0)
    train = forms.FloatField(initial=0.7, min_value=0, max_value=1)
    val = forms.FloatField(initial=0.15, min_value=0, max_value=1)
    test = forms.FloatField(initial=0.15, min_value=0, max_value=1)

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if all(k in data for k in ("train", "val", "test")):
            if abs(data["train"] + data["val"] + data["test"] - 1) > 1e-6:
                raise forms.ValidationError("train, val and test must add up to 1")
        return data
