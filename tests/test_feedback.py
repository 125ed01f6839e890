"""`proxy-rlhf prefs build` and `proxy-rlhf rm train|eval` (agents/cli/feedback.py): end to end, pairs from several
files, and errors that write nothing.
"""

from __future__ import annotations

import json

import pytest

from feedback import RMTrainConfig, train_reward_model, write_jsonl
from proxy_env.errors import ConfigError
from proxy_env.rewards.encoders import SentenceEncoder
from tests.conftest import _toy_pairs


def test_cli_build_and_train(tiny_bert, tmp_path, capsys):
    from agents.cli import main

    pairs = tmp_path / "pairs.jsonl"
    assert (
        main(
            [
                "prefs",
                "build",
                "--out",
                str(pairs),
                "--model",
                "tiny",
                "--prompts",
                str(_prompt_file(tmp_path)),
                "--pairs-per-prompt",
                "3",
                "--max-new-tokens",
                "6",
                "--reward",
                "vader",
                "--ppl-quantile",
                "1.0",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["sampled"] == 12 and summary["written"] == summary["kept"] == len(pairs.read_text().splitlines())
    write_jsonl(pairs, _toy_pairs(30))  # VADER on a random tiny LM ties often; train on the toy pairs
    assert (
        main(
            [
                "rm",
                "train",
                "--pairs",
                str(pairs),
                "--out",
                str(tmp_path / "rm"),
                "--encoder",
                str(tiny_bert),
                "--epochs",
                "3",
                "--hidden",
                "0",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["pairs"] == 30
    assert main(["rm", "eval", "--rm", str(tmp_path / "rm"), "--pairs", str(pairs)]) == 0
    assert json.loads(capsys.readouterr().out)["pairs"] == 30


def test_cli_malformed_jsonl_writes_nothing(tmp_path, capsys):
    from agents.cli import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "c", "rejected": "r"}\n{"prompt": 1}\n')
    assert main(["rm", "train", "--pairs", str(bad), "--out", str(tmp_path / "rm")]) == 2
    assert "line 2" in capsys.readouterr().err and not (tmp_path / "rm").exists()
    assert (
        main(
            [
                "prefs",
                "build",
                "--out",
                str(tmp_path / "o.jsonl"),
                "--model",
                "tiny",
                "--source",
                "human",
                "--human",
                str(bad),
            ]
        )
        == 2
    )
    assert "line 2" in capsys.readouterr().err and not (tmp_path / "o.jsonl").exists()


def test_cli_build_flag_errors(tmp_path, capsys):
    from agents.cli import main

    out = tmp_path / "o.jsonl"
    assert main(["prefs", "build", "--out", str(out), "--model", "tiny", "--num-prompts", "-2"]) == 2
    assert "--num-prompts -2 must be >= 0" in capsys.readouterr().err and not out.exists()
    missing = tmp_path / "no_template.txt"
    assert (
        main(
            [
                "prefs",
                "build",
                "--out",
                str(out),
                "--model",
                "tiny",
                "--source",
                "judge",
                "--judge-template",
                str(missing),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "--judge-template" in err and str(missing) in err and "Traceback" not in err and not out.exists()


def _prompt_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("Hello!\nHow are you today?\nTell me a story.\nWhat is your name?\n")
    return path


def test_token_pooling_errors(tiny_bert, tmp_path, capsys):
    from agents.cli import main

    with pytest.raises(ConfigError, match="input_format='pair' would average the prompt's tokens"):
        SentenceEncoder(tiny_bert, device="cpu", pooling="tokens", input_format="pair")
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(pairs, _toy_pairs(10))
    assert (
        main(
            [
                "rm",
                "train",
                "--pairs",
                str(pairs),
                "--out",
                str(tmp_path / "rm"),
                "--encoder",
                "lm",
                "--model",
                "tiny",
                "--pooling",
                "tokens",
            ]
        )
        == 2
    )
    assert "--pooling tokens" in capsys.readouterr().err and not (tmp_path / "rm").exists()


def test_pairs_from_several_files(tiny_bert, tmp_path, capsys):
    from agents.cli import main
    from feedback import load_pair_files

    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_jsonl(first, _toy_pairs(30)[:20])
    write_jsonl(second, _toy_pairs(30)[20:])
    assert [p.prompt for p in load_pair_files([first, second])] == [p.prompt for p in _toy_pairs(30)]
    with pytest.raises(ConfigError, match="non-empty list"):
        load_pair_files(str(first))
    assert (
        main(["rm", "eval", "--rm", str(_saved_toy_rm(tmp_path, tiny_bert)), "--pairs", str(first), str(second)]) == 0
    )
    assert json.loads(capsys.readouterr().out)["pairs"] == 30


def _saved_toy_rm(tmp_path, folder):
    encoder = SentenceEncoder(folder, device="cpu", layers=(0,))
    return train_reward_model(_toy_pairs(20), encoder, RMTrainConfig(hidden=0, epochs=2)).model.save(tmp_path / "rm")


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--top-p", "0"], "top_p=0.0 must be a float in (0, 1]"),
        (["--temperature", "0"], "temperature=0.0 must be a float > 0"),
        (["--top-k", "0"], "top_k=0 must be >= 1"),
    ],
    ids=["top-p-0", "temperature-0", "top-k-0"],
)
def test_prefs_build_refuses_a_bad_pool_before_loading_the_model(tmp_path, capsys, monkeypatch, flags, needle):
    """top_p 0 used to exit 0 having written nothing; temperature 0 failed on a NaN after the sampling started."""
    import proxy_env.engine.models
    from agents.cli import main

    monkeypatch.setattr(proxy_env.engine.models, "as_frozen_lm", lambda *a, **k: pytest.fail("the model was loaded"))
    out = tmp_path / "o.jsonl"
    assert main(["prefs", "build", "--out", str(out), "--model", "tiny", *flags]) == 2
    assert needle in capsys.readouterr().err and not out.exists()


def test_prefs_build_refuses_a_folder_as_out_before_sampling(tmp_path, capsys, monkeypatch):
    import proxy_env.engine.models
    from agents.cli import main

    monkeypatch.setattr(proxy_env.engine.models, "as_frozen_lm", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["prefs", "build", "--out", str(tmp_path), "--model", "tiny"]) == 2
    assert f"--out={str(tmp_path)!r} is a folder" in capsys.readouterr().err
    afile = tmp_path / "afile"
    afile.write_text("")
    assert main(["prefs", "build", "--out", str(afile / "o.jsonl"), "--model", "tiny"]) == 2
    assert "--out's folder=" in capsys.readouterr().err and afile.read_text() == ""
