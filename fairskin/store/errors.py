"""What can go wrong with the artifact store, each with a message that says what to do."""

from __future__ import annotations


class StoreError(Exception):
    """Base class: the store could not do what was asked; the message names bucket and key."""


class StoreUnavailable(StoreError):
    """The store itself cannot be used: bucket missing, endpoint unreachable, credentials
    refused. Nothing about one artifact; every call would fail the same way."""


class ArtifactMissing(StoreError):
    """A manifest, or an object a manifest lists, is not in the store."""


class ArtifactCorrupt(StoreError):
    """A downloaded object's sha256 differs from its manifest's, even after one re-fetch."""
