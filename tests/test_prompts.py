import json

import pytest

from proxy_env.errors import ConfigError, DataError
from proxy_env.prompts import load_prompts


def test_default_split_is_fixed_and_disjoint():
    train, held_out = load_prompts("default"), load_prompts("default-eval")
    assert len(train) > 500 and len(held_out) >= 200
    assert not set(train) & set(held_out)
    assert load_prompts("default") == train  # deterministic
    assert all(4 <= len(p) <= 200 for p in train + held_out)


def test_files(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("first\n\n second \n")
    assert load_prompts(txt) == ["first", "second"]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(json.dumps({"prompt": "a"}) + "\n" + json.dumps({"q": "b"}) + "\n")
    assert load_prompts(tmp_path / "p.jsonl" if False else txt) == ["first", "second"]
    with pytest.raises(DataError, match=r"p.jsonl:2: expected an object with a string field 'prompt'"):
        load_prompts(jsonl)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{not json\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON"):
        load_prompts(bad)


def test_errors():
    with pytest.raises(ConfigError, match="no such file"):
        load_prompts("nowhere.txt")
    with pytest.raises(ConfigError, match=r"prompts\[1\]=''"):
        load_prompts(["ok", ""])


def test_an_empty_file_is_named_and_other_suffixes_are_refused(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(ConfigError, match=r"prompts='.*empty.txt' holds no prompt"):
        load_prompts(empty)
    csv = tmp_path / "p.csv"
    csv.write_text("prompt\nhello\n")  # read as lines, its header would have become a prompt
    with pytest.raises(ConfigError, match=r"a \.csv file is not read as prompts; pass a \.txt file"):
        load_prompts(csv)


def test_errors_name_the_argument_they_came_from(tmp_path):
    with pytest.raises(ConfigError, match=r"^eval_prompts='.*nowhere.txt': no such file"):
        load_prompts(str(tmp_path / "nowhere.txt"), arg="eval_prompts")
