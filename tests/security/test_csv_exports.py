"""Exported CSV cells never start a spreadsheet formula."""

import csv
import io

import pytest
from django.urls import reverse

from fairskin.spreadsheet import safe_cell, safe_row
from tests.factories import SampleFactory, make_user


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ('=HYPERLINK("http://x","click")', '\'=HYPERLINK("http://x","click")'),
        ("+1+1", "'+1+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("blurry, low quality", "blurry, low quality"),
        ("", ""),
        (-0.25, -0.25),
        (3, 3),
        (None, None),
    ],
)
def test_text_that_would_be_a_formula_is_quoted_and_numbers_are_kept(value, shown):
    assert safe_cell(value) == shown
    assert safe_row({"a": value}) == {"a": shown}


@pytest.mark.django_db
def test_batch_csv_export_quotes_a_hostile_negative_prompt(client):
    sample = SampleFactory(negative_prompt='=HYPERLINK("http://evil","x")')
    client.force_login(make_user("engineer"))
    body = client.get(
        reverse("generation:export", args=[sample.batch_id]), {"format": "csv"}
    ).content.decode()
    rows = list(csv.DictReader(io.StringIO(body.split("\n", 1)[1])))
    assert rows[0]["negative_prompt"] == '\'=HYPERLINK("http://evil","x")'
    assert rows[0]["diagnosis"] == "MEL"
