"""A durable evaluator's ruleset lives in the engine as long as the evaluator does: evaluators of the same
ruleset can be made and dropped any number of times without a name clash and without the engine keeping
what they loaded, and several threads evaluate on one at once, each on its own session."""

from __future__ import annotations

import gc
import threading
import weakref

import durable_rules_engine as dre
import pytest

from service.rules.language import compile_ruleset, parse_ruleset
from service.rules.language.compiler import compiled_ruleset
from service.rules.language.durable_engine import DurableEvaluator, LoadedRuleset

TEXT = """\
ruleset: lifetime
kind: transfer
hit_policy: collect
facts: {transfer.qty: int, source.type: str, source.floor: int}
rules:
  - {id: big, priority: 10, when: transfer.qty > 10, then: {sla_hours: 1}}
  - {id: store, priority: 5, when: 'source.type == "store" and transfer.qty > source.floor', then: {sla_hours: 2}}
  - {id: any, priority: 1, when: transfer.qty >= 1, then: {approvals_required: 1}}
"""

FACTS = [
    {"transfer": {"qty": q}, "source": {"type": t, "floor": f}}
    for q in (0, 1, 5, 11, 40)
    for t in ("store", "dc")
    for f in (0, 3, 20)
]
BIG_FROM_A_STORE = {"transfer": {"qty": 40}, "source": {"type": "store", "floor": 0}}


def resident_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4


def evaluate_on_threads(evaluator: DurableEvaluator, threads: int) -> list[list[str]]:
    """Every fact set evaluated once on each of `threads` threads, all of them evaluating at once."""
    found: list[list[str]] = []
    start, opened = threading.Barrier(threads), threading.Barrier(threads)

    def work() -> None:
        start.wait()
        found.append(evaluator.evaluate(FACTS[0], "none").matched)
        opened.wait()  # every thread has its session before any ends
        found.extend(evaluator.evaluate(facts, "none").matched for facts in FACTS[1:])

    running = [threading.Thread(target=work) for _ in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    return found


def test_a_dropped_evaluator_takes_its_ruleset_out_of_the_engine() -> None:
    evaluator = compile_ruleset(parse_ruleset(TEXT), "durable")
    assert isinstance(evaluator, DurableEvaluator) and evaluator.loaded is not None
    assert evaluator.evaluate(BIG_FROM_A_STORE).matched == ["big", "store", "any"]
    handle, sid = evaluator.loaded.handle, evaluator.loaded.session()
    dre.get_facts(handle, sid)  # known to the engine while the evaluator lives
    loaded = weakref.ref(evaluator.loaded)
    del evaluator
    gc.collect()
    assert loaded() is None
    with pytest.raises(dre.error):
        dre.get_facts(handle, sid)


def test_a_version_of_an_evaluator_keeps_the_ruleset_loaded_after_the_first_is_dropped() -> None:
    first = compile_ruleset(parse_ruleset(TEXT), "durable")
    second = first.with_version(7)
    assert isinstance(second, DurableEvaluator) and second.loaded is not None
    handle = second.loaded.handle
    del first
    gc.collect()
    assert second.evaluate(BIG_FROM_A_STORE).matched == ["big", "store", "any"]
    dre.get_facts(handle, second.loaded.session())


def test_evaluators_of_one_ruleset_made_and_dropped_many_times_neither_clash_nor_accumulate() -> None:
    compiled = compiled_ruleset(parse_ruleset(TEXT))
    expected = [compile_ruleset(compiled.ruleset, "python").evaluate(f, "none").matched for f in FACTS] * 2
    handles: list[int] = []
    kept: list[weakref.ref[LoadedRuleset]] = []
    sizes: dict[int, int] = {}
    for round_ in range(400):
        # the same compiled ruleset and so the same name each time; every evaluator opens two sessions
        evaluator = DurableEvaluator(compiled, fallback=False)
        assert evaluator.loaded is not None
        assert sorted(map(tuple, evaluate_on_threads(evaluator, 2))) == sorted(map(tuple, expected))
        handles.append(evaluator.loaded.handle)
        kept.append(weakref.ref(evaluator.loaded))
        del evaluator
        if round_ in (99, 399):
            gc.collect()
            sizes[round_] = resident_kib()
    assert len(set(handles)) == len(handles)  # each evaluator had a ruleset of its own
    assert all(ref() is None for ref in kept)
    for handle in handles[:20]:
        with pytest.raises(dre.error):
            dre.get_facts(handle, "w1")
    # Kept in the engine, 300 rulesets with two used sessions each take about 50 MB.
    assert sizes[399] - sizes[99] < 8 * 1024, sizes


def test_threads_evaluate_together_on_one_evaluator_each_on_its_own_session() -> None:
    ruleset = parse_ruleset(TEXT)
    python = compile_ruleset(ruleset, "python")
    durable = compile_ruleset(ruleset, "durable")
    assert isinstance(durable, DurableEvaluator) and durable.loaded is not None
    expected = [python.evaluate(f, "none").matched for f in FACTS]
    for _ in range(20):
        found = evaluate_on_threads(durable, 4)
        assert sorted(map(tuple, found)) == sorted(map(tuple, expected * 4))
    # each round's threads have ended before the next round's start: their sessions are handed on
    assert durable.loaded.open_sessions() == 4


def test_a_session_is_kept_by_its_thread_and_handed_on_once_the_thread_ends() -> None:
    durable = compile_ruleset(parse_ruleset(TEXT), "durable")
    assert isinstance(durable, DurableEvaluator) and durable.loaded is not None
    loaded = durable.loaded
    mine = loaded.session()
    seen: list[str] = []
    thread = threading.Thread(target=lambda: seen.append(loaded.session()))
    thread.start()
    thread.join()
    assert seen[0] != mine and loaded.session() == mine
    after = threading.Thread(target=lambda: seen.append(loaded.session()))
    after.start()
    after.join()
    assert seen == [seen[0], seen[0]] and loaded.open_sessions() == 2
