"""The Bradley–Terry reward model: loss goes down, held-out accuracy, save/load, env loading, CLI."""

from __future__ import annotations

import json
import os
import time

import pytest
import torch

from feedback import (
    BTRewardModel,
    LMEncoder,
    RMTrainConfig,
    SentenceEncoder,
    load_reward_model,
    minilm_dir,
    train_reward_model,
    write_jsonl,
)
from feedback.records import PreferencePair
from feedback.rm import balance_by_length, bt_loss, split_by_prompt
from proxy_env.errors import ConfigError, DataError
from proxy_env.rewards import resolve_reward
from proxy_env.rewards.learned import CONFIG_NAME, Standardize, TokenMeanHead

GOOD = ["great", "wonderful", "happy", "lovely", "excellent", "nice"]
BAD = ["awful", "terrible", "sad", "horrible", "bad", "nasty"]


class Toy:
    """A fixed random embedding per word: a separable toy set when labels depend on the word."""

    name, dim = "toy", 8

    def __init__(self):
        gen = torch.Generator().manual_seed(0)
        self.table = {w: torch.randn(self.dim, generator=gen) for w in GOOD + BAD}

    def spec(self):
        return {"type": "toy"}

    def embed(self, prompts, responses):
        return torch.stack([self.table[r.split()[0]] for r in responses])


def _toy_pairs(n=120):
    return [
        PreferencePair(f"q{i}", f"{GOOD[i % 6]} day", f"{BAD[(i * 5) % 6]} day", "toy", 0.1 + (i % 10) / 10)
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(folder)
    return folder


def test_bt_loss():
    assert float(bt_loss(torch.tensor([0.0]), torch.tensor([0.0]))) == pytest.approx(0.6931, abs=1e-4)
    assert float(bt_loss(torch.tensor([10.0]), torch.tensor([0.0]))) < 1e-4


def test_loss_decreases_on_separable_set():
    result = train_reward_model(
        _toy_pairs(), Toy(), RMTrainConfig(hidden=16, epochs=150, patience=150, learning_rate=1e-2, seed=0)
    )
    train_losses = [t for t, _ in result.history]
    assert train_losses[-1] < 0.1 < 0.5 < train_losses[0]
    m = result.metrics
    assert m["test_accuracy"] == 1.0 and m["test_pairs"] == 24 and m["val_pairs"] == 12 and m["train_pairs"] == 84
    assert 0 < m["test_pairs_margin"] < 24 and m["test_accuracy_margin"] == 1.0
    scores = result.model(["q"] * 2, ["great day", "awful day"])
    assert scores[0] > scores[1]


def test_early_stopping_and_validation():
    result = train_reward_model(_toy_pairs(), Toy(), RMTrainConfig(hidden=0, epochs=500, patience=3, learning_rate=0.3))
    assert len(result.history) < 500
    with pytest.raises(ConfigError, match="val_fraction"):
        RMTrainConfig(val_fraction=0.5, test_fraction=0.6).validate()
    for field, value, match in [
        ("learning_rate", 0.0, "learning_rate=0.0 must be a finite number > 0"),
        ("learning_rate", float("nan"), "learning_rate=nan"),
        ("weight_decay", -0.1, "weight_decay=-0.1 must be a finite number >= 0"),
        ("hidden", 2.5, "hidden=2.5 must be an int >= 0"),
        ("hidden", -1, "hidden=-1 must be an int >= 0"),
        ("epochs", True, "epochs=True must be an int >= 1"),
    ]:
        with pytest.raises(ConfigError, match=match):
            RMTrainConfig(**{field: value}).validate()
    RMTrainConfig(hidden=0, weight_decay=0.0).validate()  # the edges are valid
    with pytest.raises(ConfigError, match="at least 2"):
        train_reward_model(_toy_pairs(1), Toy())


def test_split_by_prompt_does_not_leak_prompts():
    pairs = [PreferencePair(f"q{i % 25}", f"good {i}", f"bad {i}", "toy") for i in range(100)]  # 4 pairs per prompt
    train, val, test = split_by_prompt(pairs, test_fraction=0.2, val_fraction=0.2, seed=3)
    assert sorted(train + val + test) == list(range(100))
    sets = [{pairs[i].prompt for i in part} for part in (train, val, test)]
    assert [len(s) for s in sets] == [15, 5, 5]  # by prompt, not by pair
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])


def test_training_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_reward_model(_toy_pairs(20), Toy(), RMTrainConfig(hidden=4, epochs=2))
    assert torch.equal(torch.rand(3), expected)


def test_balance_by_length():
    pairs = (
        [PreferencePair("p", "a b c d e", "a", "s")] * 5
        + [PreferencePair("p", "a", "a b c d e", "s")] * 2
        + [PreferencePair("p", "a b", "c d", "s")] * 3
    )
    kept = balance_by_length(pairs, bucket_words=2)
    longer = sum(len(p.chosen.split()) > len(p.rejected.split()) for p in kept)
    shorter = sum(len(p.chosen.split()) < len(p.rejected.split()) for p in kept)
    assert longer == shorter == 2 and len(kept) == 7


@pytest.mark.parametrize(
    "pooling, layers",
    [("mean", (-1,)), ("sum", (0, 1)), ("tokens", (0, 1))],
    ids=["mean-last", "sum-0-1", "tokens-0-1"],
)
def test_save_load_round_trip(tiny_bert, tmp_path, pooling, layers):
    encoder = SentenceEncoder(tiny_bert, device="cpu", pooling=pooling, layers=layers)
    assert encoder.dim == 32 * len(layers)
    pairs = _toy_pairs(40)
    trained = train_reward_model(pairs, encoder, RMTrainConfig(hidden=8, epochs=20))
    path = trained.model.save(tmp_path / "rm")
    assert sorted(p.name for p in path.iterdir()) == ["model.safetensors", CONFIG_NAME]
    loaded = load_reward_model(path, device="cpu")
    assert (loaded.encoder.pooling, loaded.encoder.layers) == (pooling, layers)
    standardize = next(m for m in loaded.head.modules() if isinstance(m, Standardize))
    assert not torch.equal(standardize.std, torch.ones(encoder.dim))  # input statistics were fitted and saved
    assert isinstance(loaded.head, TokenMeanHead) == (pooling == "tokens")
    texts = ["great day", "awful day", "something else"]
    assert loaded(["q"] * 3, texts) == pytest.approx(trained.model(["q"] * 3, texts), abs=1e-5)
    assert loaded.metrics["test_accuracy"] == trained.metrics["test_accuracy"]
    env_reward = resolve_reward(str(path))  # what reward="path/to/rm" in the env does
    assert isinstance(env_reward, BTRewardModel)
    trained.model.save(path)  # overwriting an RM folder is allowed; nothing else is left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rm"]


def test_failed_save_keeps_the_old_folder(tmp_path, monkeypatch):
    trained = train_reward_model(_toy_pairs(20), Toy(), RMTrainConfig(hidden=0, epochs=2))
    path = trained.model.save(tmp_path / "rm")
    before = (path / CONFIG_NAME).read_text()
    real_rename, calls = os.rename, []

    def flaky_rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the old folder was moved aside; renaming the new one into place fails
            raise OSError("disk full")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", flaky_rename)
    trained.model.mean += 1.0  # the new save differs from the old one
    with pytest.raises(OSError, match="disk full"):
        trained.model.save(path)
    monkeypatch.undo()
    assert len(calls) == 3 and (path / CONFIG_NAME).read_text() == before  # the old model was put back
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rm"]  # no hidden .tmp/.old folders left behind


def test_load_errors(tiny_bert, tmp_path):
    with pytest.raises(ConfigError, match="holds no reward_model.json"):
        load_reward_model(tmp_path)
    trained = train_reward_model(
        _toy_pairs(20), SentenceEncoder(tiny_bert, device="cpu"), RMTrainConfig(hidden=0, epochs=2)
    )
    path = trained.model.save(tmp_path / "rm")
    config = json.loads((path / CONFIG_NAME).read_text())
    (path / CONFIG_NAME).write_text(json.dumps({**config, "version": 99}))
    with pytest.raises(DataError, match="format version 99"):
        load_reward_model(path)
    (path / CONFIG_NAME).write_text(json.dumps({**config, "format": "other"}))
    with pytest.raises(DataError, match="not a Bradley–Terry"):
        load_reward_model(path)
    (path / CONFIG_NAME).write_text(json.dumps({**config, "head": {"in_dim": 32, "hidden": 4}}))
    with pytest.raises(DataError, match="does not match"):
        load_reward_model(path)
    (path / CONFIG_NAME).write_text(json.dumps({**config, "head": {**config["head"], "per_token": True}}))
    with pytest.raises(DataError, match=r"per_token=True does not match the encoder \(pooling='mean'\)"):
        load_reward_model(path)
    legacy = {**config, "version": 2, "head": {k: v for k, v in config["head"].items() if k != "per_token"}}
    (path / CONFIG_NAME).write_text(json.dumps(legacy))  # a version-2 folder written before per-token heads existed
    texts = ["great day", "awful day"]
    assert load_reward_model(path)(["q"] * 2, texts) == pytest.approx(trained.model(["q"] * 2, texts), abs=1e-5)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("x")
    with pytest.raises(ConfigError, match="not a reward-model folder"):
        trained.model.save(tmp_path / "other")


def test_lm_encoder_round_trip(tiny, tmp_path):
    encoder = LMEncoder(tiny)
    emb = encoder.embed(["Hi", "Hi"], ["", "hello there"])
    assert emb.shape == (2, 64) and torch.isfinite(emb).all()
    trained = train_reward_model(
        _toy_pairs(20), encoder, RMTrainConfig(hidden=0, epochs=3, test_fraction=0.0, val_fraction=0.0)
    )
    assert trained.metrics["evaluated_on"] == "train"
    loaded = load_reward_model(trained.model.save(tmp_path / "rm"), lm=tiny)
    assert loaded(["Hi"], ["great day"]) == pytest.approx(trained.model(["Hi"], ["great day"]), abs=1e-5)


def test_minilm_encoder_loads_offline():
    start = time.perf_counter()
    encoder = SentenceEncoder(device="cpu")
    emb = encoder.embed(["q"] * 3, ["What a wonderful day!", "What a lovely day!", "The invoice is overdue."])
    assert encoder.dim == 384 and time.perf_counter() - start < 30
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert float(emb[0] @ emb[1]) > float(emb[0] @ emb[2])  # similar sentences are closer


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


def test_sum_pooling_counts_tokens_and_bad_layers(tiny_bert):
    """Sum pooling grows with repeated content (mean pooling does not); layers must exist."""
    summed, mean = (
        SentenceEncoder(tiny_bert, device="cpu", pooling="sum", layers=(0,)),
        SentenceEncoder(tiny_bert, device="cpu", layers=(0,)),
    )
    one, three = summed.embed(["", ""], ["good", "good good good"]).norm(dim=-1)
    assert three > 1.3 * one  # [CLS] good [SEP] vs [CLS] good good good [SEP]: 3 vs 5 token states
    norms = mean.embed(["", ""], ["good", "good good good"]).norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones(2))
    with pytest.raises(ConfigError, match=r"layers=\[5\].*hidden states"):
        SentenceEncoder(tiny_bert, device="cpu", layers=(5,))


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


def test_token_encoder_states_and_mask(tiny_bert):
    """pooling="tokens" returns every token's states plus a mask channel; padding is zero."""
    encoder = SentenceEncoder(tiny_bert, device="cpu", pooling="tokens", layers=(0, 1), batch_size=1)
    states = encoder.embed(["", ""], ["good", "good good good"])  # one text per batch: padded to a common width after
    assert encoder.per_token and encoder.dim == 64 and states.shape == (2, 5, 65)
    assert states[:, :, -1].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]  # [CLS] good [SEP] + 2 padding
    assert torch.count_nonzero(states[0, 3:]) == 0
    pooled = SentenceEncoder(tiny_bert, device="cpu", pooling="sum", layers=(0, 1)).embed(
        ["", ""], ["good", "good good good"]
    )
    torch.testing.assert_close(states[:, :, :-1].sum(1), pooled)  # the same token states the sum pooling adds up


def test_token_head_ignores_padding_and_learns_a_lexicon(tiny_bert):
    """The per-token head averages real tokens only, and learns which words are preferred wherever they stand."""
    words = [("great", "awful"), ("wonderful", "terrible"), ("happy", "sad"), ("lovely", "horrible")]
    pairs = [
        PreferencePair(
            f"q{i}", f"the {g} day" if i % 2 else f"{g} it was", f"the {b} day" if i % 3 else f"{b} it was", "toy", 1.0
        )
        for i, (g, b) in ((i, words[i % 4]) for i in range(80))
    ]
    encoder = SentenceEncoder(tiny_bert, device="cpu", pooling="tokens", layers=(0,))
    result = train_reward_model(
        pairs, encoder, RMTrainConfig(hidden=16, epochs=200, patience=200, learning_rate=1e-2, seed=0)
    )
    assert result.metrics["test_accuracy"] == 1.0 and result.history[-1][0] < 0.1
    model = result.model
    alone = model(["q"], ["the great day"])
    batched = model(["q"] * 2, ["the great day", "a much longer text that pads the first one with many more tokens"])
    assert batched[0] == pytest.approx(alone[0], abs=1e-5)  # padding does not change a response's reward
    assert model(["q"] * 2, ["it was lovely", "it was horrible"]) == sorted(
        model(["q"] * 2, ["it was lovely", "it was horrible"]), reverse=True
    )


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
