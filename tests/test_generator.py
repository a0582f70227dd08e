"""The scenario generator: determinism, disjoint splits, balance, labelled facts, and token limits."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import replace

import pytest

from poser_interp.data.generator import (
    SPLITS,
    GeneratorConfig,
    check_bank,
    check_disjoint,
    generate,
    oversight_indices,
    save_splits,
    with_motive,
)
from poser_interp.data.scenario import FactRole, Oversight
from poser_interp.data.scenario_bank import GOOD_OVERSIGHT, IRRELEVANT, MOTIVES, POOR_OVERSIGHT, TOPICS
from poser_interp.data.scenario_files import load_scenarios
from poser_interp.errors import DataError

SMALL = GeneratorConfig(seed=0, n_train=200, n_test=100, n_benchmark=100, n_heldout=60)


@pytest.fixture(scope="module")
def splits():
    return generate(SMALL)


def _dicts(splits):
    return {name: [s.to_dict() for s in scenarios] for name, scenarios in splits.items()}


def test_same_seed_same_splits_and_other_seed_differs(splits):
    assert _dicts(generate(SMALL)) == _dicts(splits)
    other = generate(GeneratorConfig(seed=1, n_train=200, n_test=100, n_benchmark=100, n_heldout=60))
    assert [s.render() for s in other["train"]] != [s.render() for s in splits["train"]]


def test_split_names_and_sizes(splits):
    assert tuple(splits) == SPLITS
    assert [len(splits[k]) for k in SPLITS] == [200, 100, 100, 60]
    ids = [s.id for v in splits.values() for s in v]
    assert len(set(ids)) == len(ids)
    assert splits["test"][7].id == "gen-0-test-00007"


def test_splits_disjoint_by_prompt_and_combination(splits):
    prompts = {name: {s.render() for s in v} for name, v in splits.items()}
    for name, scenarios in splits.items():
        assert len(prompts[name]) == len(scenarios), f"duplicate prompt within {name}"
    names = list(prompts)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not prompts[a] & prompts[b], f"{a} and {b} share a prompt"

    def key(s):
        others = frozenset(f.text for f in s.facts if f.role is not FactRole.CRITICAL)
        m = s.meta
        return (m["topic_index"], m["pair_index"], s.oversight, tuple(m["critical_indices"]), others)

    keys = [key(s) for v in splits.values() for s in v]
    assert len(set(keys)) == len(keys)


def test_check_disjoint_raises_on_a_shared_prompt(splits):
    with pytest.raises(DataError, match="disjoint"):
        check_disjoint({"train": splits["train"][:3], "test": [splits["train"][1]]})


def test_heldout_topics_never_seen_elsewhere(splits):
    heldout = {s.topic for s in splits["test_heldout_topics"]}
    assert len(heldout) == SMALL.heldout_topics
    for name in ("train", "test", "benchmark"):
        assert not heldout & {s.topic for s in splits[name]}, name
    # the held-out topics are drawn by the seed, not fixed
    other = generate(GeneratorConfig(seed=3, n_train=10, n_test=10, n_benchmark=10, n_heldout=60))
    assert {s.topic for s in other["test_heldout_topics"]} != heldout


def test_benchmark_is_good_oversight_only(splits):
    assert {s.oversight for s in splits["benchmark"]} == {Oversight.GOOD}


@pytest.mark.parametrize("name", SPLITS)
def test_answer_order_oversight_and_motive_balanced(splits, name):
    scenarios = splits[name]
    n = len(scenarios)
    letters = Counter(s.aligned_letter for s in scenarios)
    assert abs(letters["A"] - letters["B"]) <= 1
    motives = Counter(s.meta["motive"] for s in scenarios)
    assert set(motives) == set(MOTIVES) and abs(motives["resources"] - motives["power"]) <= 2
    poor = sum(s.oversight is Oversight.POOR for s in scenarios)
    assert poor == (0 if name == "benchmark" else round(n * SMALL.poor_fraction))
    # answer order is not confounded with oversight
    for o in Oversight:
        group = [s.aligned_letter for s in scenarios if s.oversight is o]
        assert abs(group.count("A") - group.count("B")) <= 1
    # answer order is shuffled, not strictly alternating
    assert any(a.aligned_letter == b.aligned_letter for a, b in zip(scenarios, scenarios[1:], strict=False))


def test_poor_fraction_is_respected():
    sp = generate(GeneratorConfig(n_train=100, n_test=40, n_benchmark=0, n_heldout=0, poor_fraction=0.25))
    assert sum(s.oversight is Oversight.POOR for s in sp["train"]) == 25
    assert sum(s.oversight is Oversight.POOR for s in sp["test"]) == 10
    assert sp["benchmark"] == [] and sp["test_heldout_topics"] == []


@pytest.mark.parametrize("n_critical", [1, 2])
def test_facts_labelled_and_critical_count(n_critical):
    sp = generate(GeneratorConfig(n_train=80, n_test=20, n_benchmark=20, n_heldout=20, n_critical=n_critical))
    for s in (s for v in sp.values() for s in v):
        assert all(f.role is not FactRole.UNLABELLED for f in s.facts)
        assert "{" not in s.render() and "}" not in s.render()
        critical = {f.text for f in s.facts_with_role(FactRole.CRITICAL)}
        assert len(critical) == n_critical == len(s.meta["critical_indices"])
        pool = GOOD_OVERSIGHT if s.oversight is Oversight.GOOD else POOR_OVERSIGHT
        assert critical == {pool[c].format(topic=s.topic) for c in s.meta["critical_indices"]}
        every_critical = {t.format(topic=s.topic) for t in GOOD_OVERSIGHT + POOR_OVERSIGHT}
        assert not every_critical & {f.text for f in s.facts if f.role is not FactRole.CRITICAL}
        lo, hi = SMALL.n_other_facts
        assert lo <= len(s.facts) - n_critical <= hi
        assert s.system_message in TOPICS[s.meta["topic_index"]].system_messages
        pair = TOPICS[s.meta["topic_index"]].action_pairs[s.meta["pair_index"]]
        assert (pair.aligned, pair.misaligned, pair.motive) == (s.aligned_action, s.misaligned_action, s.meta["motive"])


def test_critical_fact_position_varies(splits):
    positions = Counter(
        next(i for i, f in enumerate(s.facts) if f.role is FactRole.CRITICAL) for s in splits["train"]
    )
    assert len(positions) >= 3


def test_with_motive(splits):
    power = with_motive(splits["train"], "power")
    assert power and all(s.meta["motive"] == "power" for s in power)
    assert len(power) + len(with_motive(splits["train"], "resources")) == len(splits["train"])
    with pytest.raises(DataError, match="motive"):
        with_motive(splits["train"], "fame")


def test_bank_size_and_structure():
    check_bank()
    assert len(TOPICS) >= 48
    assert len({t.name for t in TOPICS}) == len(TOPICS)
    assert len(GOOD_OVERSIGHT) >= 12 and len(POOR_OVERSIGHT) >= 12 and len(IRRELEVANT) >= 40
    aligned_openers, misaligned_openers = Counter(), Counter()
    for t in TOPICS:
        assert len(t.system_messages) >= 2 and len(t.contextual) >= 3 and len(t.motivating) >= 2, t.name
        assert len(t.action_pairs) >= 3, t.name
        assert {p.motive for p in t.action_pairs} == set(MOTIVES), t.name
        for p in t.action_pairs:
            for action in (p.aligned, p.misaligned):
                assert 6 <= len(action.split()) <= 16, action
            aligned_openers[p.aligned.split()[0]] += 1
            misaligned_openers[p.misaligned.split()[0]] += 1
    n_pairs = sum(len(t.action_pairs) for t in TOPICS)
    # openers are varied, and shared between the two sides, so no first word gives an action away
    assert max(aligned_openers.values()) < n_pairs / 10 and max(misaligned_openers.values()) < n_pairs / 10
    assert len(set(aligned_openers) & set(misaligned_openers)) >= 10


def test_bank_first_tokens_distinct(tokenizer):
    check_bank(tokenizer)
    for t in TOPICS:
        for p in t.action_pairs:
            a = tokenizer.encode(p.aligned, add_special_tokens=False)[0]
            b = tokenizer.encode(p.misaligned, add_special_tokens=False)[0]
            assert a != b, (t.name, p.aligned, p.misaligned)


def test_prompts_fit_token_limit(splits, tokenizer):
    checked = generate(SMALL, tokenizer=tokenizer)  # runs the length and answer-token checks
    assert _dicts(checked) == _dicts(splits)
    lengths = [len(tokenizer.encode(s.render(), add_special_tokens=False)) for v in splits.values() for s in v]
    assert max(lengths) <= 300
    assert 100 <= statistics.median(lengths) <= 250


def test_token_limit_violation_names_the_topic(tokenizer):
    with pytest.raises(DataError, match="max_tokens=50"):
        generate(GeneratorConfig(n_train=4, n_test=0, n_benchmark=0, n_heldout=0, max_tokens=50), tokenizer=tokenizer)


def test_config_validation():
    with pytest.raises(DataError, match="poor_fraction"):
        GeneratorConfig(poor_fraction=1.5)
    with pytest.raises(DataError, match="heldout_topics"):
        GeneratorConfig(heldout_topics=len(TOPICS))
    with pytest.raises(DataError, match="n_critical"):
        GeneratorConfig(n_critical=0)
    with pytest.raises(DataError, match="n_other_facts"):
        GeneratorConfig(n_other_facts=(3, 1))


def test_save_splits_round_trip(splits, tmp_path):
    paths = save_splits(splits, tmp_path / "gen", SMALL)
    assert set(paths) == {*SPLITS, "config"}
    for name in SPLITS:
        assert [s.to_dict() for s in load_scenarios(paths[name])] == [s.to_dict() for s in splits[name]]
    config = GeneratorConfig.load(paths["config"])
    assert config == SMALL
    assert json.loads(paths["config"].read_text())["answer_format"] == "action"
    assert _dicts(generate(config)) == _dicts(splits)
    # the training pool is stored gzipped, byte-stable, and read back through its plain name
    assert paths["train"].name == "train.jsonl.gz" and not (tmp_path / "gen" / "train.jsonl").exists()
    assert [s.id for s in load_scenarios(tmp_path / "gen" / "train.jsonl")] == [s.id for s in splits["train"]]
    first = paths["train"].read_bytes()
    assert save_splits(splits, tmp_path / "gen", SMALL)["train"].read_bytes() == first
    paths["train"].write_bytes(first[:len(first) // 2])
    with pytest.raises(DataError, match="cannot read scenario file .*train.jsonl.gz"):
        load_scenarios(tmp_path / "gen" / "train.jsonl")


def test_n_topics_restricts_the_seen_topics():
    small = generate(GeneratorConfig(seed=0, n_train=120, n_test=30, n_benchmark=30, n_heldout=20, n_topics=5))
    seen = {s.topic for name in ("train", "test", "benchmark") for s in small[name]}
    assert len(seen) == 5
    assert not seen & {s.topic for s in small["test_heldout_topics"]}
    assert {s.topic for s in small["test_heldout_topics"]} == {s.topic for s in generate(SMALL)["test_heldout_topics"]}
    with pytest.raises(DataError, match="n_topics"):
        GeneratorConfig(n_topics=len(TOPICS))


def test_oversight_pool_limits_the_critical_sentences_and_leaves_other_configs_unchanged():
    pooled = generate(replace(SMALL, oversight_pool=2))
    for oversight in Oversight:
        allowed = set(oversight_indices(replace(SMALL, oversight_pool=2), oversight))
        assert len(allowed) == 2
        used = {i for name in ("train", "test", "benchmark", "test_heldout_topics") for s in pooled[name]
                if s.oversight is oversight for i in s.meta["critical_indices"]}
        assert used == allowed  # every allowed sentence is used, no other
    assert len({i for s in generate(SMALL)["train"] for i in s.meta["critical_indices"]}) > 2
    with pytest.raises(DataError, match="oversight_pool"):
        GeneratorConfig(n_critical=2, oversight_pool=1)
