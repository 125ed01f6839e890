"""Preference records: both JSONL layouts, errors naming the line, atomic writes."""

from __future__ import annotations

import json

import pytest

from feedback.records import PreferencePair, load_pairs, write_jsonl
from feedback.sources import human_pairs
from proxy_env.errors import DataError


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_both_layouts_parse(tmp_path):
    path = _write(
        tmp_path / "h.jsonl",
        [
            json.dumps({"prompt": "p", "chosen": "good", "rejected": "bad", "margin": 0.5}),
            "",
            json.dumps({"prompt": "q", "response_1": "a", "response_2": "b", "preferred": 2}),
        ],
    )
    pairs = human_pairs(path)
    assert pairs == [PreferencePair("p", "good", "bad", "human", 0.5), PreferencePair("q", "b", "a", "human")]


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("{not json", r"line 2: not valid JSON"),
        ("[1, 2]", r"line 2: expected a JSON object"),
        (json.dumps({"prompt": "p", "chosen": "c"}), r"line 2: field 'rejected' must be a string, got missing"),
        (
            json.dumps({"prompt": "p", "response_1": "a", "response_2": "b", "preferred": 3}),
            r"line 2: field 'preferred' must be 1 or 2",
        ),
        (json.dumps({"prompt": "p", "answer": "a"}), r"line 2: a preference record needs"),
        (
            json.dumps({"prompt": "p", "chosen": "c", "rejected": "r", "margin": "big"}),
            r"line 2: field 'margin' must be a number",
        ),
    ],
    ids=["bad-json", "not-object", "missing-field", "bad-preferred", "unknown-layout", "bad-margin"],
)
def test_malformed_line_is_named(tmp_path, line, match):
    path = _write(tmp_path / "bad.jsonl", [json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"}), line])
    with pytest.raises(DataError, match=match) as info:
        load_pairs(path)
    assert str(path) in str(info.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_pairs(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="holds no preference records"):
        load_pairs(_write(tmp_path / "empty.jsonl", ["", "  "]))


def test_write_is_atomic(tmp_path):
    path = tmp_path / "out.jsonl"
    assert write_jsonl(path, [PreferencePair("p", "c", "r", "vader", 0.4, 3.0, float("nan"))]) == 1
    assert json.loads(path.read_text())["ppl_rejected"] is None  # NaN is written as null
    before = path.read_text()
    with pytest.raises(ValueError):  # a failure mid-way leaves the old file untouched and no temporary file
        write_jsonl(path, [{"ok": 1}, {"bad": float("inf")}])
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_a_file_that_is_not_utf8_names_its_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    good = json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"})
    path.write_bytes((good + "\n" + '{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n').encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.jsonl, line 2: not UTF-8 text \(byte \d+: invalid"):
        load_pairs(path)
