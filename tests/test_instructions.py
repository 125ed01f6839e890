"""The instructions task (proxy_env/tasks/instructions.py): IFEval's checkers on hand-written responses."""

import subprocess
import sys

import pytest

from proxy_env.errors import RewardError
from proxy_env.tasks.instructions import KINDS, InstructionReward, instruction_args, kind, per_instruction, prompt_set


def cases(name, args):
    """A response that follows the instruction and one that breaks it."""
    if name == "punctuation:no_comma":
        return "Yes I can help.", "Yes, I can help."
    if name == "change_case:english_lowercase":
        return "yes i can help you with that, it is a lovely day today.", "Yes I Can Help You With That Today."
    if name == "change_case:english_capital":
        return "YES I CAN HELP YOU WITH THAT, IT IS A LOVELY DAY TODAY.", "yes i can help you with that today."
    if name == "keywords:forbidden_words":
        return "Hmm, sure thing, friend.", "Well " + " ".join(args["forbidden_words"]) + "."
    if name == "keywords:existence":
        return "Well " + " ".join(args["keywords"]) + ".", "Hmm."
    if name == "keywords:letter_frequency":
        many, none = " ".join(args["letter"] * 2 for _ in range(args["let_frequency"])), "Hm."
        return (none, many) if args["let_relation"] == "less than" else (many, none)
    if name == "length_constraints:number_words":
        many = " ".join(["word"] * (args["num_words"] + 1))
        return ("Yes.", many) if args["relation"] == "less than" else (many, "Yes.")
    if name == "detectable_content:postscript":
        return "Sure. P.S. see you soon", "Sure, see you soon."
    if name == "startend:end_checker":
        return f"Sure. {args['end_phrase']}", f"{args['end_phrase']} Sure."
    if name == "startend:quotation":
        return '"Sure, I can."', "Sure, I can."
    if name == "detectable_format:title":
        return "<<A reply>> Sure.", "Sure."
    if name == "detectable_format:number_highlighted_sections":
        return "*one* and *two* and *three*", "Sure."
    raise AssertionError(name)


@pytest.fixture(scope="module")
def reward():
    return InstructionReward()


def single(reward, name):
    """The held-out prompts carrying ``name`` alone."""
    return [p for p in reward.prompts if [n for n, _ in reward.instructions(p)] == [name]]


@pytest.mark.parametrize("name", list(KINDS))
def test_each_checker_accepts_a_following_response_and_refuses_a_breaking_one(reward, name):
    prompts = single(reward, name)[:3]
    assert prompts, f"no prompt carries {name} alone"
    for prompt in prompts:
        args = reward.instructions(prompt)[0][1]
        good, bad = cases(name, args)
        assert reward([prompt, prompt], [good, bad]) == [1.0, 0.0], (prompt, good, bad)


def test_the_reward_is_the_fraction_followed_and_an_empty_response_follows_nothing(reward):
    prompt = next(
        p
        for p in reward.prompts
        if [n for n, _ in reward.instructions(p)] == ["punctuation:no_comma", "detectable_format:title"]
        or [n for n, _ in reward.instructions(p)] == ["detectable_format:title", "punctuation:no_comma"]
    )
    assert reward([prompt] * 4, ["<<T>> yes I can", "<<T>> yes, I can", "yes I can", ""]) == [1.0, 0.5, 0.5, 0.0]
    table = per_instruction([prompt] * 2, ["<<T>> yes, I can", "yes I can"])
    assert table == {"detectable_format:title": ("lookahead", 1, 2), "punctuation:no_comma": ("myopic", 1, 2)}


def test_prompts_are_fixed_split_like_the_corpus_and_carry_their_instruction_text(reward):
    train, held_out = prompt_set(False), prompt_set(True)
    assert (len(train), len(held_out)) == (637, 266)
    assert not set(train) & set(held_out)
    assert prompt_set(True) == held_out
    base, _ = reward.prompts[held_out[0]]
    assert held_out[0].startswith(base.rstrip(".?!")) and len(held_out[0]) > len(base)
    assert instruction_args(base) == instruction_args(base)
    counts = {n: 0 for n in KINDS}
    for prompt in train:
        ids = [n for n, _ in reward.instructions(prompt)]
        assert 1 <= len(ids) <= 2 and len(set(ids)) == len(ids)
        for n in ids:
            counts[n] += 1
    assert min(counts.values()) >= 30  # every instruction type is trained on
    assert kind("keywords:letter_frequency", {"let_relation": "at least"}) == "lookahead"


def test_a_prompt_of_another_task_is_refused_naming_the_fix(reward):
    with pytest.raises(RewardError, match="prompts='instructions' or 'instructions-eval'"):
        reward(["How are you?"], ["Fine."])


def test_importing_the_checkers_fetches_nothing():
    """lm-eval's import-time punkt_tab download is never called, and nltk.download is restored after."""
    code = (
        "import nltk\n"
        "def boom(*a, **k): raise SystemExit('nltk.download was called')\n"
        "nltk.download = boom\n"
        "from proxy_env.tasks.instructions import registry, InstructionReward\n"
        "registry(); InstructionReward()\n"
        "assert nltk.download is boom\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
