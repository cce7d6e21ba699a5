from __future__ import annotations

import pytest
import trio

from arkor_trio._groups import collapse_groups, lone_exception


def _cancelled() -> trio.Cancelled:
    return trio.Cancelled._create()  # trio's own constructor for a Cancelled


def test_a_lone_error_among_cancelled_siblings_stands_for_the_group():
    err = KeyError("x")
    group = BaseExceptionGroup("g", [_cancelled(), BaseExceptionGroup("inner", [err])])
    assert lone_exception(group) is err


def test_all_cancelled_collapses_to_one_cancelled():
    first, second = _cancelled(), _cancelled()
    assert lone_exception(BaseExceptionGroup("g", [first, second])) is first


def test_two_real_errors_stay_a_group():
    assert lone_exception(ExceptionGroup("g", [KeyError(), ValueError()])) is None


def test_collapse_groups_reraises_the_lone_error_and_keeps_real_groups():
    err = ValueError("only")
    with pytest.raises(ValueError, match="only"), collapse_groups():
        raise ExceptionGroup("g", [err])
    with pytest.raises(ExceptionGroup), collapse_groups():
        raise ExceptionGroup("g", [KeyError(), ValueError()])
