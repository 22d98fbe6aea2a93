from pathlib import Path

import pytest

from fedsim import catalogue
from fedsim.config import GROUPS, options

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_configs_readme_is_in_sync_with_the_yaml_files():
    assert (CONFIGS / "README.md").read_text() == catalogue.markdown(), (
        "configs/README.md is stale: run `fedsim list --markdown > configs/README.md`"
    )


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_has_a_one_line_description(group, option):
    description, _ = catalogue.describe(group, option)
    assert 5 < len(description) < 120
    assert "|" not in description  # it would split its row of the markdown catalogue


def test_plain_text_lists_every_option():
    listing = catalogue.text()
    for group in GROUPS:
        assert f"{group}:" in listing
        assert all(f"  {option} " in listing for option in options(group))
