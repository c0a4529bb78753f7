"""docs/CONFIG_REFERENCE.md is what dev/config_reference.py writes from the fields."""
import config_reference


def test_the_configuration_reference_is_current():
    assert config_reference.PAGE.read_text() == config_reference.reference(), (
        "docs/CONFIG_REFERENCE.md is stale: run .venv/bin/python dev/config_reference.py")
