"""EarlyStopping: patience, deltas, thresholds, non-finite values, state round trip."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch

from hfbridge.callbacks import EarlyStopping


def _run(es: EarlyStopping, values: list[float]) -> int | None:
    """Index of the update that said stop, else None."""
    for i, v in enumerate(values):
        if es.update({es.monitor: v}):
            return i
    return None


def test_patience_counts_evaluations_without_improvement() -> None:
    es = EarlyStopping("loss", patience=2)
    assert _run(es, [1.0, 0.9, 0.95, 0.9, 0.5]) == 3
    assert es.reason == "loss did not improve over 0.9 for 2 evaluations (patience=2)"
    assert (es.best, es.wait, es.should_stop) == (0.9, 2, True)


def test_patience_zero_stops_at_first_non_improvement() -> None:
    assert _run(EarlyStopping("loss", patience=0), [1.0, 0.5, 0.5]) == 2


def test_mode_max_and_min_delta() -> None:
    es = EarlyStopping("acc", mode="max", patience=1, min_delta=0.05)
    assert _run(es, [0.5, 0.6, 0.63]) == 2  # +0.03 is below min_delta
    assert es.best == 0.6


def test_relative_min_delta() -> None:
    es = EarlyStopping("loss", patience=1, min_delta=0.1, relative=True)
    assert _run(es, [10.0, 8.5, 7.8]) == 2  # needs < 8.5 * 0.9 = 7.65
    assert not EarlyStopping("loss", patience=1, min_delta=0.1, relative=True).update({"loss": 1.0})


def test_non_finite_stops_at_once_or_counts_as_no_improvement() -> None:
    es = EarlyStopping("loss", patience=5)
    assert _run(es, [1.0, math.nan]) == 1
    assert es.reason == "loss is nan, not finite (check_finite=True)"
    lenient = EarlyStopping("loss", patience=2, check_finite=False)
    assert _run(lenient, [math.nan, 1.0, math.inf, math.nan]) == 3
    assert lenient.best == 1.0


def test_thresholds() -> None:
    es = EarlyStopping("loss", patience=10, stopping_threshold=0.1)
    assert _run(es, [1.0, 0.5, 0.1]) == 2
    assert es.reason == "loss=0.1 reached stopping_threshold=0.1"
    assert es.best == 0.1
    div = EarlyStopping("acc", mode="max", patience=10, divergence_threshold=0.2)
    assert _run(div, [0.5, 0.3, 0.19]) == 2
    assert "worse than divergence_threshold=0.2" in (div.reason or "")


def test_accepts_tensor_and_numpy_values() -> None:
    import numpy as np

    es = EarlyStopping("loss", patience=1)
    es.update({"loss": torch.tensor(1.0)})
    es.update({"loss": np.float32(0.5)})
    assert es.best == 0.5


def test_state_round_trip_keeps_patience() -> None:
    es = EarlyStopping("loss", patience=3)
    _run(es, [1.0, 2.0, 3.0])
    state = es.state_dict()
    assert json.loads(json.dumps(state)) == state  # plain values only
    fresh = EarlyStopping("loss", patience=3)
    fresh.load_state_dict(state)
    assert fresh.update({"loss": 4.0}) is True  # third evaluation without improvement: patience carried over
    with pytest.raises(ValueError, match="saved for monitor='loss', mode='min', not monitor='acc'"):
        EarlyStopping("acc").load_state_dict(state)
    with pytest.raises(ValueError, match="lacks keys"):
        fresh.load_state_dict({"best": 1.0})


def test_missing_monitor_is_an_error() -> None:
    with pytest.raises(
        ValueError, match=r"must contain the monitored key 'eval_loss'.*got numeric keys \['loss'\]"
    ):
        EarlyStopping("eval_loss").update({"loss": 1.0})


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"monitor": 3}, TypeError, "`monitor` must be str"),
        ({"monitor": ""}, ValueError, "`monitor` must be a non-empty metric name"),
        ({"mode": "up"}, ValueError, "`mode` must be one of 'min', 'max'; got 'up'"),
        ({"patience": -1}, ValueError, "`patience` must be a non-negative integer"),
        ({"patience": 1.5}, TypeError, "`patience` must be a non-negative integer"),
        (
            {"min_delta": -0.1},
            ValueError,
            r"`min_delta` must be a finite real number in \[0, inf\); got -0.1",
        ),
        ({"min_delta": "0.1"}, TypeError, "`min_delta` must be a finite real number"),
        (
            {"stopping_threshold": math.nan},
            ValueError,
            "`stopping_threshold` must be a finite real number or None",
        ),
        ({"divergence_threshold": "x"}, TypeError, "`divergence_threshold` must be a finite real number"),
        ({"relative": 1}, TypeError, "`relative` must be bool"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], exc: type, match: str) -> None:
    monitor = kwargs.pop("monitor", "loss")
    with pytest.raises(exc, match=match):
        EarlyStopping(monitor, **kwargs)
