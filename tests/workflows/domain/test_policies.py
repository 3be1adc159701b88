"""The operator's policy book, loaded from MARGIN_CALL_POLICIES at start."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from worker.config import ConfigError, load_settings
from workflows.domain.policies import PolicyOverrides


def test_a_policy_file_names_the_operators_policies_and_bounds(tmp_path: Path) -> None:
    book = {
        "policies": [
            {"name": "standard"},
            {
                "name": "vip",
                "version": 3,
                "defaults": {"deadline": "PT8H"},
                "bounds": {"deadline": {"low": "PT1H", "high": "P2D"}},
            },
        ]
    }
    path = tmp_path / "policies.json"
    path.write_text(json.dumps(book))
    settings = load_settings({"MARGIN_CALL_POLICIES": str(path)})
    assert settings.policies.resolve("vip").deadline == timedelta(hours=8)
    assert settings.policies.resolve(
        "vip", PolicyOverrides(deadline=timedelta(days=2))
    ).deadline == timedelta(days=2)


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("not json", "MARGIN_CALL_POLICIES"),
        (json.dumps({"policies": [{"name": "x", "defaults": {"deadline": "P3000000D"}}]}), "deadline"),
        (json.dumps({"policies": [{"name": "x", "defaults": {"hard_threshold": "0"}}]}), "hard_threshold"),
        (json.dumps({"policies": [{"name": "x"}, {"name": "x"}]}), "unique"),
        (json.dumps({"policies": [{"name": "x", "overridable": ["colour"]}]}), "colour"),
    ],
)
def test_a_bad_policy_file_is_refused_at_start_naming_the_field(
    tmp_path: Path, content: str, named: str
) -> None:
    path = tmp_path / "policies.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=named):
        load_settings({"MARGIN_CALL_POLICIES": str(path)})
