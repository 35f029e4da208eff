import pytest

from proxy.config.yamltree import EnvError, expand_env


def test_variables_expand_from_the_environment() -> None:
    assert expand_env("redis://${HOST}:${PORT:-6379}/0", {"HOST": "r1"}) == "redis://r1:6379/0"


def test_empty_variable_takes_the_default_like_a_shell() -> None:
    assert expand_env("${DSN:-none}", {"DSN": ""}) == "none"
    assert expand_env("${DSN:-}", {}) == ""


def test_unset_variable_without_default_is_an_error_naming_it() -> None:
    with pytest.raises(EnvError, match="environment variable SLACK_BOT_TOKEN is not set"):
        expand_env("${SLACK_BOT_TOKEN}", {})


def test_double_dollar_escapes() -> None:
    assert expand_env("$${NOT_A_VAR}", {}) == "${NOT_A_VAR}"
