"""Local copies of catalog images' files, for workers that hand paths to the engine."""

from __future__ import annotations

import shutil
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage

from catalog.models import Image


def image_cache_dir() -> Path:
    """The folder remote images are copied into; created when missing."""
    cache = Path(settings.FAIRSKIN_ARTIFACTS_ROOT) / "image-cache"
    cache.mkdir(parents=True, exist_ok=True)
    return cache


def image_local_path(image: Image, cache: Path) -> str:
    """A local path to the image's derivative; copied out of remote storage when needed."""
    try:
        return image.preprocessed.path
    except NotImplementedError:  # S3 and other remote storages have no local path
        name = image.preprocessed.name
        if not name:  # unreachable: .path raised ValueError for a field without a file
            raise ValueError(f"{image} has no preprocessed file") from None
        target = cache / Path(name).name
        if not target.exists():
            with default_storage.open(name) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst)
        return str(target)
