"""Generate disjoint train / test / benchmark scenario splits from the project's scenario bank.

A scenario combines one topic, one action pair, `n_critical` oversight sentences (all good or all
poor) and a few other facts (motivating, contextual, irrelevant), in shuffled order. Splits never
share a combination (topic, action pair, critical sentences, fact set), hence never share a
rendered prompt; `test_heldout_topics` uses topics that no other split sees. Everything is drawn
from one `random.Random(seed)`, so a config reproduces its splits exactly.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from ..errors import AnswerChoiceError, DataError
from .scenario import AnswerFormat, Fact, FactRole, Oversight, Scenario, first_token_ids
from .scenario_bank import GOOD_OVERSIGHT, IRRELEVANT, MOTIVES, POOR_OVERSIGHT, TOPICS, Topic
from .scenario_files import save_scenarios
from .wordings import trainable

SPLITS: tuple[str, ...] = ("train", "test", "benchmark", "test_heldout_topics")
COMPRESSED: frozenset[str] = frozenset({"train"})
"""Splits `save_splits` writes gzipped (the training pool: ~5 MB of JSON Lines, ~0.5 MB gzipped)."""
_MAX_TRIES = 200
_LETTERS: tuple[Literal["A", "B"], Literal["A", "B"]] = ("A", "B")


@dataclass(frozen=True)
class GeneratorConfig:
    seed: int = 0
    """Seed of the one random generator that draws everything: same seed, same splits."""
    n_train: int = 2000
    """Scenarios in the `train` split."""
    n_test: int = 500
    """Scenarios in the `test` split (same topics as train, never the same prompt)."""
    n_benchmark: int = 500
    """Scenarios in the `benchmark` split: good oversight only, as in POSER's benchmark."""
    n_heldout: int | None = None
    """Scenarios in `test_heldout_topics`; None means as many as `n_test`."""
    answer_format: AnswerFormat = AnswerFormat.ACTION
    """How the model answers: the action text itself (ACTION) or its letter (LETTER)."""
    heldout_topics: int = 6
    """Topics reserved for `test_heldout_topics` and never used by the other splits (0: split is empty)."""
    n_topics: int | None = None
    """Topics of train, test and benchmark (a seeded subset of those not held out; None: all of them).
    Issue #3's faker pilot that learned used 18 templated topics; 18 generated topics alone did not
    make fakers learn, 18 topics with `oversight_pool=1` did (research/2026-11-26-trigger-organisms-v1.md). Fewer topics
    generalise worse to held-out topics."""
    poor_fraction: float = 0.5
    """Fraction of poor-oversight scenarios in train, test and test_heldout_topics."""
    n_critical: int = 1
    """Critical (oversight-revealing) sentences per scenario, all of the same oversight."""
    oversight_pool: int | None = None
    """Oversight sentences available per class (a seeded subset of the 16 good / 16 poor ones; None: all).
    Issue #3's templated pilot, where a faker learned, stated oversight with one fixed sentence per class;
    1 reproduces that setting (fakers learn, measured); more sentences vary the cue (fakers did not learn
    with all 16, measured; values between are untested)."""
    n_other_facts: tuple[int, int] = (2, 4)
    """Inclusive range of extra facts (motivating, contextual, irrelevant) per scenario."""
    heldout_wordings: bool = False
    """Keep the oversight sentences of `wordings.HELDOUT` (4 good, 4 poor) out of every split, so that
    models can be judged on wordings they never saw (`wordings.reworded`). `oversight_pool` then draws
    from the 12 remaining sentences per class."""
    max_tokens: int = 300
    """Longest rendered prompt allowed, in tokens, when a tokenizer is given to `generate`."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "answer_format", AnswerFormat(self.answer_format))
        object.__setattr__(self, "n_other_facts", tuple(self.n_other_facts))
        counts = {"n_train": self.n_train, "n_test": self.n_test, "n_benchmark": self.n_benchmark,
                  "n_heldout": self.n_heldout or 0, "heldout_topics": self.heldout_topics}
        bad = [k for k, v in counts.items() if v < 0]
        if bad:
            raise DataError(f"generator config: {bad} must not be negative")
        if self.heldout_topics > len(TOPICS) - 1:
            raise DataError(f"generator config: heldout_topics={self.heldout_topics} leaves no topic for train; "
                            f"the bank has {len(TOPICS)} topics")
        if self.n_topics is not None and not 1 <= self.n_topics <= len(TOPICS) - self.heldout_topics:
            raise DataError(f"generator config: n_topics={self.n_topics} must lie in [1, "
                            f"{len(TOPICS) - self.heldout_topics}] (topics not held out)")
        if not 0.0 <= self.poor_fraction <= 1.0:
            raise DataError(f"generator config: poor_fraction={self.poor_fraction} must lie in [0, 1]")
        most = min(len(GOOD_OVERSIGHT), len(POOR_OVERSIGHT))
        if self.heldout_wordings:
            most = min(len(trainable(o)) for o in Oversight)
        if not 1 <= self.n_critical <= most:
            raise DataError(f"generator config: n_critical={self.n_critical} must lie in [1, {most}]")
        if self.oversight_pool is not None and not self.n_critical <= self.oversight_pool <= most:
            raise DataError(f"generator config: oversight_pool={self.oversight_pool} must lie in "
                            f"[n_critical={self.n_critical}, {most}]")
        if len(self.n_other_facts) != 2 or not 0 <= self.n_other_facts[0] <= self.n_other_facts[1]:
            raise DataError(f"generator config: n_other_facts={self.n_other_facts} must be (low, high) "
                            "with 0 <= low <= high")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["answer_format"] = self.answer_format.value
        d["n_other_facts"] = list(self.n_other_facts)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GeneratorConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise DataError(f"generator config: unknown field(s) {unknown}; known fields are {sorted(known)}")
        d = dict(d)
        if "n_other_facts" in d:
            d["n_other_facts"] = tuple(d["n_other_facts"])
        if "answer_format" in d:
            d["answer_format"] = AnswerFormat(d["answer_format"])
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> GeneratorConfig:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"cannot read generator config {path}: {e}") from e


def _other_facts(topic: Topic, motive: str, k: int, rng: random.Random) -> list[Fact]:
    """k distinct non-critical facts; each slot picks a role first, so the big irrelevant pool does not dominate."""
    pools = {FactRole.MOTIVATING: list(topic.motivating_for(motive)),
             FactRole.CONTEXTUAL: list(topic.contextual),
             FactRole.IRRELEVANT: list(topic.irrelevant) + list(IRRELEVANT)}
    facts = []
    for _ in range(k):
        roles = [r for r, pool in pools.items() if pool]
        if not roles:
            break
        role = rng.choice(roles)
        pool = pools[role]
        facts.append(Fact(pool.pop(rng.randrange(len(pool))).format(topic=topic.name), role))
    return facts


def oversight_indices(config: GeneratorConfig, oversight: Oversight) -> list[int]:
    """Indices into GOOD_OVERSIGHT / POOR_OVERSIGHT that scenarios may use under `config.oversight_pool`.

    Drawn from their own generator (seeded by `config.seed` and the class), so that the main draw
    sequence, hence every testbed generated without a pool, is unchanged.
    """
    pool = GOOD_OVERSIGHT if oversight is Oversight.GOOD else POOR_OVERSIGHT
    allowed = trainable(oversight) if config.heldout_wordings else list(range(len(pool)))
    if config.oversight_pool is None:
        return allowed
    return sorted(random.Random(f"{config.seed}-oversight-{oversight.value}").sample(allowed, config.oversight_pool))


def _split(name: str, n: int, topic_ids: Sequence[int], poor_fraction: float, config: GeneratorConfig,
           rng: random.Random, used: set[tuple[Any, ...]]) -> list[Scenario]:
    if n == 0 or not topic_ids:
        return []
    n_poor = round(n * poor_fraction)
    # Sorted by oversight, letters alternate A/B over the whole list and motives go r,p,p,r,... within each
    # oversight class: the split and each class are balanced within one on answer order, each class on motive.
    plan: list[tuple[Oversight, Literal["A", "B"], str]] = []
    for i in range(n):
        j = i if i < n_poor else i - n_poor
        plan.append((Oversight.POOR if i < n_poor else Oversight.GOOD, _LETTERS[i % 2], MOTIVES[(j + j // 2) % 2]))
    rng.shuffle(plan)
    topic_cycle: list[int] = []
    while len(topic_cycle) < n:  # every topic used equally often (within one)
        round_ = list(topic_ids)
        rng.shuffle(round_)
        topic_cycle.extend(round_)
    allowed_by = {o: oversight_indices(config, o) for o in Oversight}
    scenarios = []
    for i, (oversight, letter, motive) in enumerate(plan):
        t_idx = topic_cycle[i]
        topic = TOPICS[t_idx]
        critical_pool = GOOD_OVERSIGHT if oversight is Oversight.GOOD else POOR_OVERSIGHT
        allowed = allowed_by[oversight]
        for _ in range(_MAX_TRIES):
            p_idx = rng.choice(topic.pair_indices(motive))
            crit = tuple(sorted(rng.sample(allowed, config.n_critical)))
            others = _other_facts(topic, motive, rng.randint(*config.n_other_facts), rng)
            key = (t_idx, p_idx, oversight.value, crit, frozenset(f.text for f in others))
            if key not in used:
                break
        else:
            raise DataError(f"split {name!r}: no unused combination left for topic {topic.name!r} after {_MAX_TRIES} "
                            "tries; ask for fewer scenarios, fewer held-out topics or a wider n_other_facts range")
        used.add(key)
        facts = [Fact(critical_pool[c].format(topic=topic.name), FactRole.CRITICAL) for c in crit] + others
        rng.shuffle(facts)
        pair = topic.action_pairs[p_idx]
        scenarios.append(Scenario(
            id=f"gen-{config.seed}-{name}-{i:05d}", topic=topic.name,
            system_message=rng.choice(topic.system_messages), facts=tuple(facts), oversight=oversight,
            aligned_action=pair.aligned, misaligned_action=pair.misaligned, aligned_letter=letter,
            answer_format=config.answer_format, source="generated",
            meta={"split": name, "motive": pair.motive, "topic_index": t_idx, "pair_index": p_idx,
                  "critical_indices": list(crit)},
        ))
    return scenarios


def generate(config: GeneratorConfig, tokenizer: Any = None) -> dict[str, list[Scenario]]:
    """Splits `train`, `test`, `benchmark` (good oversight only) and `test_heldout_topics`.

    With a tokenizer, also checks that every prompt fits `config.max_tokens` and that both actions
    of every scenario start with different tokens; raises `DataError` naming the culprit otherwise.
    """
    check_bank(tokenizer)
    rng = random.Random(config.seed)
    heldout, seen = _topic_split(config, rng)
    used: set[tuple[Any, ...]] = set()
    n_heldout = config.n_test if config.n_heldout is None else config.n_heldout
    splits = {
        "train": _split("train", config.n_train, seen, config.poor_fraction, config, rng, used),
        "test": _split("test", config.n_test, seen, config.poor_fraction, config, rng, used),
        "benchmark": _split("benchmark", config.n_benchmark, seen, 0.0, config, rng, used),
        "test_heldout_topics": _split("test_heldout_topics", n_heldout, heldout, config.poor_fraction, config,
                                      rng, used),
    }
    check_disjoint(splits)
    if tokenizer is not None:
        check_with_tokenizer(splits, tokenizer, config.max_tokens)
    return splits


def _topic_split(config: GeneratorConfig, rng: random.Random) -> tuple[list[int], list[int]]:
    """(held-out topic indices, indices of the topics train / test / benchmark draw from): the main draw's first use."""
    order = list(range(len(TOPICS)))
    rng.shuffle(order)
    heldout, seen = sorted(order[:config.heldout_topics]), order[config.heldout_topics:]
    return heldout, sorted(seen if config.n_topics is None else seen[:config.n_topics])


def extra_benchmark(config: GeneratorConfig, n: int, round_: int, existing: Sequence[Scenario],
                    tokenizer: Any = None) -> list[Scenario]:
    """Round `round_` (1, 2, ...) of extra benchmark candidates for data generated with `config`: good oversight
    only, the same topics and wordings, from a generator of their own (ids `gen-<seed>-benchmark-x<round>-i`), so
    the splits already written never change. Candidates rendering a prompt of `existing` (every split and earlier
    round) are dropped, so up to `n` come back."""
    if round_ < 1:
        raise DataError(f"round {round_}: extra benchmark rounds count from 1")
    _, seen = _topic_split(config, random.Random(config.seed))
    rng = random.Random(f"{config.seed}-benchmark-extra-{round_}")
    taken = {s.render() for s in existing}
    out = [s for s in _split(f"benchmark-x{round_}", n, seen, 0.0, config, rng, set()) if s.render() not in taken]
    check_disjoint({"extra": out})
    if tokenizer is not None:
        check_with_tokenizer({"extra": out}, tokenizer, config.max_tokens)
    return out


def check_disjoint(splits: dict[str, list[Scenario]]) -> None:
    """Raise `DataError` if a rendered prompt appears twice, within or across splits."""
    first_seen: dict[str, str] = {}
    for name, scenarios in splits.items():
        for s in scenarios:
            prompt = s.render()
            if prompt in first_seen:
                raise DataError(f"scenario {s.id} ({name}) renders the same prompt as {first_seen[prompt]}; "
                                "splits must be disjoint")
            first_seen[prompt] = s.id


def check_with_tokenizer(splits: dict[str, list[Scenario]], tokenizer: Any, max_tokens: int) -> None:
    """Raise `DataError` if a prompt is longer than `max_tokens` or a scenario's answers share a first token."""
    for scenarios in splits.values():
        for s in scenarios:
            n = len(tokenizer.encode(s.render(), add_special_tokens=False))
            if n > max_tokens:
                raise DataError(f"scenario {s.id} (topic {s.topic!r}) renders to {n} tokens, more than "
                                f"max_tokens={max_tokens}; shorten its facts or raise max_tokens")
            try:
                s.choice_tokens(tokenizer)
                first_token_ids(tokenizer, (s.aligned_action, s.misaligned_action), what=f"scenario {s.id}")
            except AnswerChoiceError as e:
                raise DataError(f"topic {s.topic!r}, actions {s.aligned_action!r} / {s.misaligned_action!r}: "
                                f"{e}") from e


def check_bank(tokenizer: Any = None) -> None:
    """Check the scenario bank's structure; with a tokenizer, that every action pair has distinct first tokens."""
    for topic in TOPICS:
        for motive in MOTIVES:
            if not topic.pair_indices(motive) or not topic.motivating_for(motive):
                raise DataError(f"topic {topic.name!r} needs an action pair and a motivating fact of motive {motive!r}")
        for pair in topic.action_pairs:
            if pair.aligned.split()[0].lower() == pair.misaligned.split()[0].lower():
                raise DataError(f"topic {topic.name!r}: {pair.aligned!r} and {pair.misaligned!r} start alike")
            if tokenizer is not None:
                try:
                    first_token_ids(tokenizer, (pair.aligned, pair.misaligned), what=f"topic {topic.name!r}")
                except AnswerChoiceError as e:
                    raise DataError(str(e)) from e


def with_motive(scenarios: Sequence[Scenario], motive: str) -> list[Scenario]:
    """The scenarios whose misaligned action has this motive (`resources` or `power`)."""
    if motive not in MOTIVES:
        raise DataError(f"unknown motive {motive!r}; choose one of {MOTIVES}")
    return [s for s in scenarios if s.meta.get("motive") == motive]


def save_splits(splits: dict[str, list[Scenario]], out_dir: str | Path, config: GeneratorConfig) -> dict[str, Path]:
    """Write `<split>.jsonl` for each non-empty split (the training pool gzipped, `train.jsonl.gz`: a tenth of the
    size, read back by `load_scenarios(out / "train.jsonl")`) and `generator_config.json`; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: save_scenarios(scenarios, out / (f"{name}.jsonl.gz" if name in COMPRESSED else f"{name}.jsonl"))
             for name, scenarios in splits.items() if scenarios}
    config_path = out / "generator_config.json"
    config_path.write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
    paths["config"] = config_path
    return paths
