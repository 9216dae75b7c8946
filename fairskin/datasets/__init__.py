"""Dataset metadata parsers and safe archive reading, for the importer to call.

Django-free: the importer turns the returned records into database rows in one transaction.
"""

from fairskin.datasets.archive import ArchiveError, read_member, safe_zip_members
from fairskin.datasets.errors import MetadataError
from fairskin.datasets.mapping import load_mapping
from fairskin.datasets.parse import FORMATS, parse_metadata
from fairskin.datasets.records import ExcludedRow, ImageRecord, ParseResult
from fairskin.datasets.summary import summarize

__all__ = [
    "FORMATS",
    "ArchiveError",
    "ExcludedRow",
    "ImageRecord",
    "MetadataError",
    "ParseResult",
    "load_mapping",
    "parse_metadata",
    "read_member",
    "safe_zip_members",
    "summarize",
]
