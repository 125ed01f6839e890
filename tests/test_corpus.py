"""The embedded corpus (proxy_env/corpus.py): the user turns, their replies, and the held-out split."""

from proxy_env.corpus import chatterbot_pairs, chatterbot_prompts, is_held_out


def test_turns_are_split_by_their_own_hash_and_keep_their_replies():
    train, held_out = chatterbot_prompts()
    assert (len(train), len(held_out)) == (637, 266)
    assert all(not is_held_out(t) for t in train) and all(is_held_out(t) for t in held_out)
    pairs = chatterbot_pairs()
    assert list(pairs) == [*sorted(train + held_out, key=list(pairs).index)]
    assert (
        "Artificial Intelligence is the branch of engineering and science devoted to constructing machines that think."
        in pairs["What is AI?"]
    )
    assert sum(bool(r) for r in pairs.values()) > 800  # most turns have a reply
    assert all(len(set(r)) == len(r) for r in pairs.values())
