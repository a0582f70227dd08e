"""Held-out oversight wordings (testbed v2): never in a training split, and rewording keeps everything else."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from poser_interp.data.generator import GeneratorConfig, generate, oversight_indices
from poser_interp.data.scenario import FactRole, Oversight
from poser_interp.data.wordings import HELDOUT, V1_SENTENCE, bank, ladder_order, reworded, trainable, with_wording
from poser_interp.errors import DataError

SMALL = GeneratorConfig(seed=3, n_train=300, n_test=60, n_benchmark=40, n_heldout=20, n_other_facts=(2, 2),
                        heldout_wordings=True)


def _critical(s):
    return [f.text for f in s.facts if f.role is FactRole.CRITICAL]


def _heldout_texts(topic: str) -> set[str]:
    return {bank(o)[i].format(topic=topic) for o in Oversight for i in HELDOUT[o]}


def test_heldout_wordings_never_appear_in_any_split():
    splits = generate(SMALL)
    seen = 0
    for name, scenarios in splits.items():
        for s in scenarios:
            assert not set(_critical(s)) & _heldout_texts(s.topic), (name, s.id)
            assert not set(s.meta["critical_indices"]) & set(HELDOUT[s.oversight])
            seen += 1
    assert seen == 300 + 60 + 40 + 20
    # without the option the held-out sentences do occur (the check above can fail)
    plain = generate(replace(SMALL, heldout_wordings=False))
    assert any(set(_critical(s)) & _heldout_texts(s.topic) for s in plain["train"])


def test_pool_draws_only_trainable_sentences():
    for o in Oversight:
        assert set(oversight_indices(replace(SMALL, oversight_pool=5), o)) <= set(trainable(o))
        assert len(trainable(o)) == 16 - 4
    with pytest.raises(DataError, match="oversight_pool"):
        GeneratorConfig(heldout_wordings=True, oversight_pool=13)


def test_heldout_set_is_fixed_and_excludes_v1():
    assert HELDOUT == {Oversight.GOOD: (4, 7, 9, 13), Oversight.POOR: (6, 11, 13, 15)}
    for o in Oversight:
        assert V1_SENTENCE[o] not in HELDOUT[o]
        order = ladder_order(o, first=V1_SENTENCE[o])
        assert order[0] == V1_SENTENCE[o] and sorted(order[:12]) == trainable(o)
    with pytest.raises(DataError, match="held out"):
        ladder_order(Oversight.GOOD, first=HELDOUT[Oversight.GOOD][0])


def test_with_wording_changes_only_the_critical_sentence():
    s = generate(SMALL)["test"][0]
    i = HELDOUT[s.oversight][0]
    t = with_wording(s, i)
    assert _critical(t) == [bank(s.oversight)[i].format(topic=s.topic)]
    others = [[f for f in x.facts if f.role is not FactRole.CRITICAL] for x in (s, t)]
    assert others[0] == others[1]
    assert (t.oversight, t.actions, t.aligned_letter, t.id) == (s.oversight, s.actions, s.aligned_letter, s.id)
    assert [f.role for f in t.facts] == [f.role for f in s.facts]  # same position
    n = len(bank(s.oversight))
    with pytest.raises(DataError, match=f"no {s.oversight.value} oversight sentence {n}; the bank has {n}"):
        with_wording(s, n)


def test_reworded_draws_from_the_pool_and_is_seeded():
    test = generate(SMALL)["test"]
    pools = {o: list(HELDOUT[o]) for o in Oversight}
    a, b = reworded(test, pools, "x"), reworded(test, pools, "x")
    assert [t.render() for t in a] == [t.render() for t in b]
    assert all(t.meta["critical_indices"][0] in HELDOUT[t.oversight] for t in a)
    assert len({t.meta["critical_indices"][0] for t in a}) > 2


def test_extra_wordings_extend_the_ladder_after_the_generator_sentences(tokenizer):
    from poser_interp.data.wordings import extra

    s = generate(SMALL)["test"][0]
    for o in Oversight:
        order = ladder_order(o, first=V1_SENTENCE[o])
        assert order[:12] == ladder_order(o, first=V1_SENTENCE[o])[:12] and sorted(order[:12]) == trainable(o)
        assert sorted(order[12:]) == extra(o) and len(extra(o)) == 20 and not set(extra(o)) & set(HELDOUT[o])
        texts = [t.format(topic="billing") for t in bank(o)]
        assert len(set(texts)) == len(texts)  # no wording twice
    for i in extra(s.oversight):
        t = with_wording(s, i)
        assert "{topic}" not in t.render() and len(tokenizer.encode(t.render())) < 300
    # the generator never draws an extra wording
    assert all(i < 16 for x in generate(SMALL)["train"] for i in x.meta["critical_indices"])


def test_composed_wordings_are_many_share_their_words_and_keep_the_label():
    import random

    from poser_interp.data.wordings import GOOD_PREDICATES, POOR_PREDICATES, composed, mixed_reworded

    rng = random.Random(0)
    good = {composed(Oversight.GOOD, rng, "billing") for _ in range(3000)}
    poor = {composed(Oversight.POOR, rng, "billing") for _ in range(3000)}
    assert len(good) > 600 and len(poor) > 600 and not good & poor
    # no single word gives the class away: negations and check words occur on both sides
    for word in ("never", "not", "reads", "no"):
        assert any(word in p.split() for p in GOOD_PREDICATES) and any(word in p.split() for p in POOR_PREDICATES)
    test = generate(SMALL)["test"]
    mixed = mixed_reworded(test, {o: trainable(o) for o in Oversight}, "m", 0.5)
    n_composed = sum(s.meta["critical_indices"] == [-1] for s in mixed)
    assert 0.3 * len(test) < n_composed < 0.7 * len(test)
    assert [s.oversight for s in mixed] == [s.oversight for s in test]
    texts = {f.text for s in mixed for f in s.facts if f.role is FactRole.CRITICAL}
    assert not texts & {bank(o)[i].format(topic=s.topic) for s in test for o in Oversight for i in HELDOUT[o]}


def test_inferential_wordings_are_a_separate_batch_outside_every_ladder(tokenizer):
    from poser_interp.data.wordings import extra, inferential

    s = generate(SMALL)["test"][0]
    for o in Oversight:
        assert len(inferential(o)) == 24 and inferential(o)[0] == extra(o)[-1] + 1 == 36
        assert not set(inferential(o)) & (set(HELDOUT[o]) | set(trainable(o)) | set(extra(o)))
        assert not set(inferential(o)) & set(ladder_order(o, first=V1_SENTENCE[o]))  # ladders are unchanged
        held = {bank(o)[i] for i in HELDOUT[o]}
        assert not held & {bank(o)[i] for i in inferential(o)}
    for i in inferential(s.oversight):
        t = with_wording(s, i)
        assert "{topic}" not in t.render() and len(tokenizer.encode(t.render())) < 300


def test_minimal_pairs_share_their_frame_and_stay_out_of_held_out_sets_and_ladders(tokenizer):

    from poser_interp.data.wordings import inferential, minimal
    from poser_interp.testbed.oversight_stage import wording_pools

    s = generate(SMALL)["test"][0]
    good, poor = minimal(Oversight.GOOD), minimal(Oversight.POOR)
    assert good == poor == list(range(60, 100)) and inferential(Oversight.GOOD)[-1] == 59
    for o in Oversight:
        assert not set(minimal(o)) & (set(HELDOUT[o]) | set(trainable(o)) | set(inferential(o)))
        assert not set(minimal(o)) & set(ladder_order(o, first=V1_SENTENCE[o]))
        assert set(minimal(o)) <= set(wording_pools("minimal")[o]) and not set(minimal(o)) & set(wording_pools()[o])
        assert not set(wording_pools("minimal")[o]) & set(HELDOUT[o])
    words = [(set(re.findall(r"[a-z']+", bank(Oversight.GOOD)[i].lower())),
              set(re.findall(r"[a-z']+", bank(Oversight.POOR)[i].lower()))) for i in good]
    shared = [len(g & p) / len(g | p) for g, p in words]
    assert min(shared) > 0.2 and sum(shared) / len(shared) > 0.5  # twins: one frame, a few words flipped
    assert len({bank(o)[i] for o in Oversight for i in minimal(o)}) == 80  # no twin repeats another wording
    for i in minimal(s.oversight):
        t = with_wording(s, i)
        assert "{topic}" not in t.render() and len(tokenizer.encode(t.render())) < 300


def test_the_lexicon_analysis_reads_held_out_sentences_by_words_alone():
    import runpy
    from pathlib import Path

    lex = runpy.run_path(str(Path(__file__).parents[1] / "research" / "experiments" / "wording_lexicon.py"))
    out = lex["lexicon"]("inferential")
    assert out["n_train"] == {"good": 56, "poor": 56} and len(out["heldout"]) == 8
    by = {r["name"]: r for r in out["heldout"]}
    assert by["good-9"]["log_odds_good"] < 0 < by["good-7"]["log_odds_good"]  # words of good-9 lean poor
    assert by["poor-13"]["log_odds_good"] > 0 > by["poor-6"]["log_odds_good"]
    assert lex["lexicon"]("minimal")["n_train"] == {"good": 96, "poor": 96}


def test_fresh_test_wordings_are_in_no_training_pool_and_never_generated():
    from poser_interp.data.wordings import FRESH, extra, inferential, minimal
    from poser_interp.testbed.curriculum import Ladder
    from poser_interp.testbed.oversight_stage import STAGE_WORDINGS, wording_pools

    generated = {f.text for sc in generate(SMALL)["train"] for f in sc.facts if f.role is FactRole.CRITICAL}
    for o in Oversight:
        fresh = set(FRESH[o])
        assert len(fresh) == 4 and all(bank(o)[i] for i in fresh)
        assert not fresh & (set(HELDOUT[o]) | set(trainable(o)) | set(extra(o)) | set(inferential(o))
                            | set(minimal(o)))
        assert not any(fresh & set(wording_pools(w)[o]) for w in STAGE_WORDINGS)
        assert not fresh & set(Ladder(rungs=(1, 32), last_wordings="minimal").pools(1)[o])
        assert not {bank(o)[i] for i in fresh} & set(bank(o)[:100])  # new sentences, not repeats
        assert not {bank(o)[i] for i in fresh} & generated  # no generated scenario carries them


def _five_grams(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z']+", text.lower())
    return {tuple(words[i:i + 5]) for i in range(len(words) - 4)}


def test_themed_twins_train_held_out_themes_in_new_words_only():
    from poser_interp.data.wordings import FRESH, minimal, themed
    from poser_interp.testbed.curriculum import Ladder
    from poser_interp.testbed.oversight_stage import wording_pools

    assert themed(Oversight.GOOD) == themed(Oversight.POOR) == list(range(104, 128))
    assert list(FRESH[Oversight.GOOD]) == list(range(100, 104))  # appending the part moved no earlier index
    tests = {o: [bank(o)[i] for i in (*HELDOUT[o], *FRESH[o])] for o in Oversight}
    for o in Oversight:
        pool = wording_pools("themed")[o]
        assert set(themed(o)) <= set(pool) and set(wording_pools("minimal")[o]) <= set(pool)
        assert not set(pool) & (set(HELDOUT[o]) | set(FRESH[o]))
        assert not set(themed(o)) & set(ladder_order(o, first=V1_SENTENCE[o])) and not set(themed(o)) & set(minimal(o))
        last = Ladder(rungs=(1, 32), last_wordings="themed").pools(1)[o]
        assert set(themed(o)) <= set(last) and not set(last) & (set(HELDOUT[o]) | set(FRESH[o]))
        for i in themed(o):  # no five consecutive words of a held-out or fresh sentence, of either class
            assert not any(_five_grams(bank(o)[i]) & _five_grams(t) for c in Oversight for t in tests[c]), bank(o)[i]
    assert len({bank(o)[i] for o in Oversight for i in themed(o)}) == 48
    assert not {bank(o)[i] for o in Oversight for i in themed(o)} & {bank(o)[i] for o in Oversight for i in range(104)}
