"""The one parameter-check vocabulary (workbench/errors.py): what each check accepts, and
that every refusal names the parameter, the expectation and what was given."""

from __future__ import annotations

import math

import pytest

from workbench.errors import (ConfigError, ParameterTypeError, check_bool, check_choice, check_name_list, check_number,
                              check_number_list, check_positive_int, check_probability)


def test_check_number_bounds_and_wording() -> None:
    assert check_number("sigma", 0.25, low=0, low_open=True) == 0.25
    assert check_number("k", 3, low=1, integer=True) == 3 and isinstance(check_number("k", 3, integer=True), int)
    assert check_number("x", 0, low=0) == 0.0  # closed end included
    with pytest.raises(ConfigError, match=r"^Expected `sigma` to be a finite number > 0, got 0\.$"):
        check_number("sigma", 0, low=0, low_open=True)
    with pytest.raises(ConfigError, match=r"Expected `alpha` to be a finite number in \(0, 0\.5\), got 0\.5\."):
        check_number("alpha", 0.5, low=0, high=0.5, low_open=True, high_open=True)
    with pytest.raises(ConfigError, match=r"in \[0, 1\), got 1"):
        check_number("sparsity", 1, low=0, high=1, high_open=True)
    with pytest.raises(ConfigError, match=r"to be a finite number <= 2"):
        check_number("t", 3, high=2)
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ConfigError, match="finite"):
            check_number("x", bad)
    with pytest.raises(ParameterTypeError, match=r"Expected `eps` to be a finite number >= 0, got str '0\.1'\."):
        check_number("eps", "0.1", low=0)
    with pytest.raises(ParameterTypeError, match="got bool True"):
        check_number("x", True)
    with pytest.raises(ParameterTypeError, match=r"to be an int >= 1, got float 2\.0"):
        check_number("steps", 2.0, low=1, integer=True)


def test_check_number_list() -> None:
    assert check_number_list("eps", [0.1, 0, 2]) == (0.1, 0.0, 2.0)  # order kept
    assert check_number_list("sizes", (1, 8), low=1, integer=True) == (1, 8)
    assert check_number_list("s", [], allow_empty=True) == ()
    with pytest.raises(ConfigError, match=r"non-empty list of finite numbers >= 0, got \[\]"):
        check_number_list("eps", [], low=0)
    with pytest.raises(ConfigError, match=r"Expected `eps\[1\]` to be a finite number >= 0, got -1\. "
                                          r"\(in `eps` = \[0\.1, -1\]\)"):
        check_number_list("eps", [0.1, -1], low=0)
    with pytest.raises(ParameterTypeError, match=r"`sizes\[0\]` to be an int >= 1, got str 'a'"):
        check_number_list("sizes", ["a"], low=1, integer=True)
    with pytest.raises(ParameterTypeError, match=r"Expected `eps` to be a list of finite numbers >= 0, got float 0\.1"):
        check_number_list("eps", 0.1, low=0)


def test_check_name_list() -> None:
    assert check_name_list("methods", ["saliency"], ("saliency", "lime")) == ("saliency",)
    assert check_name_list("ood", []) == ()
    with pytest.raises(ConfigError, match=r"Unknown entry 'salency' in `methods`\. Did you mean 'saliency'\? "
                                          r"Valid: saliency, lime\."):
        check_name_list("methods", ["salency"], ("saliency", "lime"))
    with pytest.raises(ParameterTypeError, match=r"Expected `methods` to be a list of names .*got str 'saliency'"):
        check_name_list("methods", "saliency", ("saliency",))  # a bare string is not a list of one
    with pytest.raises(ParameterTypeError, match=r"every entry of `ood` to be a name \(str\), got int 3 in \['a', 3\]"):
        check_name_list("ood", ["a", 3])
    with pytest.raises(ConfigError, match="non-empty"):
        check_name_list("attacks", [], allow_empty=False)


def test_the_older_checks_keep_their_wording() -> None:
    with pytest.raises(ConfigError, match=r"Expected `n_boot` to be an int > 0, got 0\."):
        check_positive_int("n_boot", 0)
    with pytest.raises(ConfigError, match=r"Expected `level` to be in \(0, 1\), got 1\."):
        check_probability("level", 1, open_low=True, open_high=True)
    with pytest.raises(ConfigError, match="Did you mean 'log'"):
        check_choice("display", "lgo", ("bar", "log", "off"))


def test_check_bool() -> None:
    assert check_bool("memory", False) is False
    for bad in (0, 1, "true", None):
        with pytest.raises(ParameterTypeError, match=r"Expected `memory` to be true or false, got "):
            check_bool("memory", bad)
