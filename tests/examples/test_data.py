"""The demo data: enough labelled, varied rows, disjoint splits, a license, well-formed NER tags."""

from __future__ import annotations

import csv
import json

from tests.examples.conftest import DATA


def _rows(name: str) -> list[dict[str, str]]:
    with (DATA / name).open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_news_topics_have_enough_rows_classes_and_disjoint_splits() -> None:
    train, val = _rows("news_train.csv"), _rows("news_validation.csv")
    assert len(train) + len(val) >= 300
    labels = {r["label"] for r in train}
    assert labels == {"business", "science", "sports", "world"}
    assert {r["label"] for r in val} == labels
    for label in labels:  # balanced: every topic has the same share in both splits
        assert sum(r["label"] == label for r in train) == len(train) // len(labels)
    texts = [r["text"] for r in train + val]
    assert len(set(texts)) == len(texts), "a sentence appears twice"
    assert all(t.strip() and len(t.split()) >= 2 for t in texts)
    # not one template: the first three words vary almost everywhere
    assert len({" ".join(t.split()[:3]) for t in texts}) > 0.8 * len(texts)


def test_demo_data_has_a_license_line() -> None:
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    assert "License: CC0" in readme


def test_ner_rows_are_word_lists_with_one_bio_tag_per_word() -> None:
    tags_seen = set()
    for name in ("ner_train.jsonl", "ner_validation.jsonl"):
        lines = (DATA / name).read_text(encoding="utf-8").splitlines()
        assert len(lines) >= 16
        for line in lines:
            row = json.loads(line)
            assert len(row["tokens"]) == len(row["ner_tags"]) > 0
            for prev, tag in zip(["O", *row["ner_tags"]], row["ner_tags"]):
                if tag.startswith("I-"):  # an I- tag continues an entity of the same type
                    assert prev[2:] == tag[2:], row
            tags_seen.update(row["ner_tags"])
    assert tags_seen == {"O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"}
