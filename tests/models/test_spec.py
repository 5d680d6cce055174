"""FreezeSpec validation, the string grammar, and freeze()'s errors, warnings, dry run and logging."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import pytest

from hfbridge.models import FreezeSpec, ResolutionError, freeze


def test_string_grammar_round_trips() -> None:
    spec = FreezeSpec(
        embeddings=True,
        layers=3,
        stack="encoder",
        patterns=("*.bias", "pooler.*"),
        except_patterns=("*LayerNorm*",),
        train_norms=True,
        eval_frozen=True,
    )
    assert FreezeSpec.parse(spec.to_string()) == spec
    assert FreezeSpec.parse(" embeddings , LAYERS:4 ") == FreezeSpec(embeddings=True, layers=4)
    assert FreezeSpec.parse("all") == FreezeSpec(base_model=True, head=True)
    assert str(FreezeSpec(base_model=True, head=True)) == "all"
    assert FreezeSpec.parse("") == FreezeSpec.parse("none") == FreezeSpec()
    assert str(FreezeSpec()) == "none"
    assert FreezeSpec(patterns="x.*").patterns == ("x.*",)  # a lone string is one pattern
    assert FreezeSpec.coerce({"layers": 2}) == FreezeSpec(layers=2)
    assert FreezeSpec.coerce(None) == FreezeSpec()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"layers": -1}, ValueError, "`layers` must be a non-negative integer; got -1"),
        ({"layers": 1.5}, TypeError, "`layers` must be a non-negative integer"),
        ({"trainable_layers": True}, TypeError, "`trainable_layers` must be a non-negative integer"),
        ({"layers": 1, "trainable_layers": 1}, ValueError, "exclude each other"),
        ({"embeddings": "yes"}, TypeError, "`embeddings` must be bool"),
        ({"eval_frozen": 1}, TypeError, "`eval_frozen` must be bool"),
        (
            {"stack": "middle"},
            ValueError,
            "`stack` must be one of 'both', 'encoder', 'decoder'; got 'middle'",
        ),
        ({"pattern_syntax": "sql"}, ValueError, "`pattern_syntax` must be one of 'glob', 'regex'"),
        ({"patterns": ("",)}, ValueError, "`patterns` must hold non-empty strings"),
        ({"patterns": (3,)}, TypeError, "`patterns item` must be str"),
        ({"patterns": 3}, TypeError, "`patterns` must be a sequence of strings"),
        ({"except_patterns": ("(",), "pattern_syntax": "regex"}, ValueError, "not a valid regex"),
    ],
)
def test_spec_rejects_bad_fields(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        FreezeSpec(**kwargs)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("embedings", "unknown freeze spec item 'embedings'.*valid items: embeddings"),
        ("depth:3", "unknown freeze spec item 'depth:3'"),
        ("layers:", "needs a value after ':'"),
        ("layers:two", "needs a non-negative integer; got 'two'"),
        ("layers:1,layers:2", "given twice"),
        ("stack:middle", "`stack` must be one of"),
        ("syntax:sql", "`syntax` must be one of 'glob', 'regex'"),
    ],
)
def test_parse_rejects_bad_strings(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FreezeSpec.parse(text)


def test_coerce_rejects_bad_types() -> None:
    with pytest.raises(TypeError, match="`spec` must be a FreezeSpec, str, dict or None; got int"):
        FreezeSpec.coerce(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`spec` has unknown fields \['layer'\]"):
        FreezeSpec.coerce({"layer": 2})
    with pytest.raises(TypeError, match="`spec` must be str"):
        FreezeSpec.parse(None)  # type: ignore[arg-type]


def test_freeze_errors(make_tiny_model: Any) -> None:
    bert = make_tiny_model("bert", "sequence-classification")
    with pytest.raises(ValueError, match=r"`patterns` item 'encoder\.\*' \(glob\) matches no parameter name"):
        freeze(bert, "pattern:encoder.*")
    with pytest.raises(
        ValueError, match=r"`except_patterns` item 'nothing' \(glob\) matches no parameter name"
    ):
        freeze(bert, "embeddings,except:nothing")
    with pytest.raises(
        ValueError,
        match=r"`layers` must be at most the number of blocks \('bert.encoder.layer' has 2\); got 3",
    ):
        freeze(bert, "layers:3")
    with pytest.raises(ValueError, match="`trainable_layers` must be at most the number of blocks"):
        freeze(bert, "trainable-layers:5")
    with pytest.raises(
        ValueError, match="`stack` 'encoder' names no block stack of BertForSequenceClassification"
    ):
        freeze(bert, "layers:1,stack:encoder")
    with pytest.raises(TypeError, match="`model` must be Module"):
        freeze("bert", "embeddings")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`dry_run` must be bool"):
        freeze(bert, "embeddings", dry_run=1)  # type: ignore[arg-type]
    assert all(p.requires_grad for p in bert.parameters())  # a failed call changes nothing


def test_unresolvable_architecture_names_what_it_found_and_points_to_patterns() -> None:
    from torch import nn

    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(
        ResolutionError,
        match=r"cannot find a ModuleList of repeated transformer blocks in Sequential; found .*ModuleLists: none.*pattern:",
    ):
        freeze(model, "layers:1")
    with pytest.raises(
        ResolutionError, match=r"cannot find the input embeddings.*no get_input_embeddings.*patterns"
    ):
        freeze(model, "embeddings")
    report = freeze(model, "pattern:0.*")  # patterns work on any module
    assert report.frozen == ("0.weight", "0.bias")
    assert [p.requires_grad for p in model.parameters()] == [False, False, True, True]


def test_freeze_is_absolute_and_dry_run_changes_nothing(make_tiny_model: Any) -> None:
    model = make_tiny_model("bert", "sequence-classification")
    first = freeze(model, "all-but-head")
    plan = freeze(model, "embeddings", dry_run=True)
    assert plan.dry_run
    assert "would freeze" in str(plan)
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == set(first.frozen)  # untouched
    applied = freeze(model, "embeddings")
    assert applied.frozen == plan.frozen
    assert applied.trainable_params == plan.trainable_params
    # the second spec replaced the first: the encoder is trainable again
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == set(plan.frozen)
    assert applied.frozen_modules == ("bert.embeddings",)


def test_freeze_logs_counts_and_names(make_tiny_model: Any, caplog: pytest.LogCaptureFixture) -> None:
    model = make_tiny_model("bert", "sequence-classification")
    with caplog.at_level(logging.DEBUG, logger="hfbridge.models"):
        report = freeze(model, "embeddings,layers:1")
    text = caplog.text
    assert f"froze {report.frozen_params:,} of {report.total_params:,} parameters" in text
    assert "frozen: bert.embeddings, bert.encoder.layer.0" in text
    assert "bert.encoder.layer.0.attention.self.query.weight" in text  # full names at DEBUG


def test_warns_when_nothing_or_everything_is_frozen(make_tiny_model: Any) -> None:
    model = make_tiny_model("bert", "sequence-classification")
    with pytest.warns(UserWarning, match="freezes nothing"):
        freeze(model, "embeddings,except:*embeddings*")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        freeze(model, "none")  # asking for nothing frozen is not a mistake
    with pytest.warns(UserWarning, match="freezes every parameter"):
        report = freeze(model, "all")
    assert report.trainable_params == 0
    assert report.frozen_modules == ("",)
    assert "frozen: <whole model>" in str(report)


def test_eval_frozen_keeps_frozen_modules_in_eval_across_train(make_tiny_model: Any, loss_batch: Any) -> None:
    import copy
    import pickle

    import torch

    model = make_tiny_model("bert", "sequence-classification")
    report = freeze(model, "embeddings,layers:1,eval-frozen")
    assert report.eval_modules == ("bert.embeddings", "bert.encoder.layer.0")
    model.train()
    assert model.training
    assert model.bert.encoder.layer[1].training
    assert model.classifier.training
    for name in report.eval_modules:
        assert all(not m.training for m in model.get_submodule(name).modules()), name
    # dropout is off in the frozen part: its output is deterministic in train mode
    ids = loss_batch("bert", "sequence-classification")["input_ids"]
    with torch.no_grad():
        assert torch.equal(model.bert.embeddings(ids), model.bert.embeddings(ids))
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        clone.train()
        assert not clone.bert.embeddings.training
        assert clone.bert.encoder.layer[1].training
    # a later spec releases the pinned modules
    freeze(model, "layers:1")
    model.train()
    assert all(m.training for m in model.modules())
