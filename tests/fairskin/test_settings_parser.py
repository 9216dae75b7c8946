"""The `--set KEY=VALUE` parser that `train` and `generate` share: malformed items, repeated
and unknown keys are refused together, values are read as JSON or kept as text."""

import pytest

from fairskin.config_types import SettingsError, field_names, parse_setting_value, parse_settings
from fairskin.diffusion.config import TrainConfig
from fairskin.generation.scoring_config import ScoringConfig


def test_values_are_json_literals_or_the_text_as_given():
    parsed = parse_settings(
        [
            "steps=8",
            "learning_rate=1e-4",
            "balanced_sampling=false",
            "snr_gamma=null",
            'lora_targets=["to_q", "to_v"]',
            'fst_shares={"1-3": 0.5, "4": 0.1, "5-6": 0.4}',
            "mixed_precision=bf16",
            'token_mode="per_cell"',
            " seed =3",
            "name=a=b",
            "empty=",
        ]
    )
    assert parsed == {
        "steps": 8,
        "learning_rate": 1e-4,
        "balanced_sampling": False,
        "snr_gamma": None,
        "lora_targets": ["to_q", "to_v"],
        "fst_shares": {"1-3": 0.5, "4": 0.1, "5-6": 0.4},
        "mixed_precision": "bf16",
        "token_mode": "per_cell",
        "seed": 3,
        "name": "a=b",
        "empty": "",
    }
    assert type(parsed["steps"]) is int and type(parsed["learning_rate"]) is float
    assert parse_setting_value('"8"') == "8"  # quoted: text, not a number
    assert parse_setting_value("9" * 5000) == "9" * 5000  # too long for JSON: text
    assert parse_setting_value("Infinity") == float("inf")  # the setting's check refuses it


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["lora_rank"], "--set takes KEY=VALUE, got 'lora_rank'"),
        (["=5"], "--set takes KEY=VALUE, got '=5'"),
        ([" =5"], "--set takes KEY=VALUE, got ' =5'"),
        (["steps=1", "steps=2"], "setting steps is given more than once"),
        (["steps=1", " steps = 2"], "setting steps is given more than once"),
        (["vibes=1"], "unknown setting(s): vibes"),
        (["lora_rnk=4"], "unknown setting(s): lora_rnk (did you mean lora_rank?)"),
        (["kind=joint"], "unknown setting(s): kind"),
    ],
)
def test_bad_items_are_refused_by_name(items, message):
    known = field_names(TrainConfig, excluding=["kind"])
    with pytest.raises(SettingsError) as err:
        parse_settings(items, known=known)
    assert message in str(err.value)


def test_every_problem_is_named_at_once_and_each_repeat_once():
    with pytest.raises(SettingsError) as err:
        parse_settings(
            ["confidence=0.7", "confidence=0.8", "confidence=0.9", "sharpness=1", "brightness"],
            known=field_names(ScoringConfig),
            noun="scoring setting",
        )
    problems = str(err.value).split("; ")
    assert problems == [
        "scoring setting confidence is given more than once",
        "--set takes KEY=VALUE, got 'brightness'",
        "unknown scoring setting(s): sharpness",
    ]


def test_without_known_names_any_key_is_kept():
    assert parse_settings(["anything=1"]) == {"anything": 1}
    assert parse_settings([]) == {}
    assert "kind" in field_names(TrainConfig)
    assert field_names(TrainConfig, excluding=["kind"]) == field_names(TrainConfig) - {"kind"}
