"""The shared root helpers (validators, the label-map rule, unwrap_model): each error names the argument, the rule and the bad value."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hfbridge._checks import (
    check_choice,
    check_non_negative_int,
    check_positive_int,
    check_probability,
    check_real,
    check_type,
)


def test_check_real_accepts_and_converts() -> None:
    assert check_real("x", 3) == 3.0
    assert isinstance(check_real("x", 3), float)
    assert check_real("x", None, allow_none=True) is None
    assert check_real("lr", 1.0, low=0, high=1, low_open=True) == 1.0
    assert check_real("wd", 0, low=0) == 0.0


@pytest.mark.parametrize(
    ("value", "kwargs", "error", "message"),
    [
        ("1", {}, TypeError, r"`x` must be a finite real number; got str '1'"),
        (True, {}, TypeError, r"`x` must be a finite real number; got bool True"),
        (None, {}, TypeError, r"`x` must be a finite real number; got NoneType None"),
        (math.nan, {}, ValueError, r"`x` must be a finite real number; got nan"),
        (math.inf, {"allow_none": True}, ValueError, r"`x` must be a finite real number or None; got inf"),
        (
            0,
            {"low": 0, "low_open": True},
            ValueError,
            r"`x` must be a finite real number in \(0, inf\); got 0",
        ),
        (-1, {"low": 0}, ValueError, r"`x` must be a finite real number in \[0, inf\); got -1"),
        (1.5, {"low": 0, "high": 1}, ValueError, r"`x` must be a finite real number in \[0, 1\]; got 1.5"),
    ],
)
def test_check_real_rejects(value: object, kwargs: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        check_real("x", value, **kwargs)


def test_integer_and_choice_checks() -> None:
    assert check_positive_int("n", 3) == 3
    assert check_non_negative_int("n", 0) == 0
    assert check_positive_int("n", None, allow_none=True) is None
    with pytest.raises(ValueError, match="`n` must be a positive integer; got 0"):
        check_positive_int("n", 0)
    with pytest.raises(TypeError, match=r"`n` must be a positive integer; got 2\.0"):
        check_positive_int("n", 2.0)
    with pytest.raises(TypeError, match="`n` must be a non-negative integer; got True"):
        check_non_negative_int("n", True)
    with pytest.raises(ValueError, match="`n` must be a non-negative integer; got -1"):
        check_non_negative_int("n", -1)
    assert check_choice("side", "left", ("left", "right")) == "left"
    with pytest.raises(ValueError, match="`side` must be one of 'left', 'right'; got 'up'"):
        check_choice("side", "up", ("left", "right"))


def test_probability_and_type_checks() -> None:
    assert check_probability("p", 1) == 1.0
    with pytest.raises(ValueError, match=r"`p` must be in \(0, 1\); got 1"):
        check_probability("p", 1, inclusive=False)
    with pytest.raises(TypeError, match=r"`p` must be a float in \[0, 1\]; got '0.5'"):
        check_probability("p", "0.5")
    assert check_type("t", [1], list) == [1]
    with pytest.raises(TypeError, match="`t` must be list or tuple; got str 'x'"):
        check_type("t", "x", (list, tuple))


def test_check_label2id_is_the_one_rule() -> None:
    from hfbridge._checks import check_label2id

    assert check_label2id({1: 0, "b": 1}) == {"1": 0, "b": 1}
    with pytest.raises(TypeError, match=r"`label2id` ids must be int class ids; got 'a': 0.5"):
        check_label2id({"a": 0.5})
    with pytest.raises(ValueError, match=r"`label2id` ids must be the integers 0..1, each once"):
        check_label2id({"a": 0, "b": 2})
    with pytest.raises(ValueError, match=r"`label2id` must map at least one label"):
        check_label2id({})


def test_unwrap_model_peels_nested_wrappers_and_asks_refuse_at_each_layer() -> None:
    import torch
    from torch import nn

    from hfbridge._distributed import unwrap_model

    inner = nn.Linear(2, 2)
    wrapped = nn.DataParallel(torch.compile(inner))
    assert unwrap_model(wrapped) is inner
    seen: list[str] = []
    unwrap_model(wrapped, refuse=lambda layer: seen.append(type(layer).__name__))  # type: ignore[func-returns-value]
    assert seen == ["DataParallel", "OptimizedModule", "Linear"]
    with pytest.raises(TypeError, match="no FSDP here"):
        unwrap_model(wrapped, refuse=lambda layer: "no FSDP here" if isinstance(layer, nn.Linear) else None)
    holder = nn.Module()
    holder.add_module("_orig_mod", inner)  # a plain module with that child name is not a compile wrapper
    assert unwrap_model(holder) is holder
    with pytest.raises(TypeError, match=r"`model` must be a torch\.nn\.Module; got str"):
        unwrap_model("model")


def test_gather_object_runs_no_collective_in_a_one_process_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch.distributed as dist

    from hfbridge._distributed import gather_object

    def no_collective(*args: object, **kwargs: object) -> None:
        raise AssertionError("all_gather_object called with one process")

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/init", rank=0, world_size=1)
    try:
        monkeypatch.setattr(dist, "all_gather_object", no_collective)
        assert gather_object({"a": 1}) == [{"a": 1}]
    finally:
        dist.destroy_process_group()
