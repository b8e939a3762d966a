"""Recording hazards of issue 21: odd values never leave a run's span open or the run uncounted;
strict mode never hides the agent's own exception; only numbers are numbers; model strings, span
names and span attributes stay bounded. Public API only, exact values.
"""

from __future__ import annotations

import gc
import itertools
import math
import tracemalloc
from collections.abc import Callable, Iterator
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import paid_telemetry as pt
from paid_telemetry import agents, pricing
from tests.conftest import Recorded, make_recorded

DROPPED = "paid_telemetry_dropped_records"
RUN, ITER, TOK, COST, QUAL = "paid_agent_runs", "paid_agent_iterations", "paid_tokens", "paid_cost_cents", \
    "paid_quality_score"


def _drops(rec: Recorded) -> dict[tuple[str, str], float]:
    return {(dict(k)["instrument"], dict(k)["reason"]): v for k, v in rec.points(DROPPED).items()}


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class _Unhashable:
    """Hashing raises something other than TypeError; str() works."""

    def __hash__(self) -> int:
        raise RuntimeError("no hash")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no eq")

    def __str__(self) -> str:
        return "proj-h"


class _Bottomless:
    """Everything raises: str, repr, hash, eq, bool, float, len, iter, getattr."""

    def __getattribute__(self, name: str) -> Any:
        if name == "__class__":
            return _Bottomless
        raise RuntimeError(name)

    def __str__(self) -> str:
        raise RuntimeError("str")

    __repr__ = __str__

    def __hash__(self) -> int:
        raise RuntimeError("hash")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq")

    def __bool__(self) -> bool:
        raise RuntimeError("bool")

    def __float__(self) -> float:
        raise RuntimeError("float")


# -- odd values inside a run: the span ends and the run is counted -------------------------------
def _raising_hook(run: Any, duration: float, status: str) -> None:
    raise RuntimeError("hook bug")


ODD: list[tuple[str, Callable[[], None], dict[tuple[str, str], int], str]] = [
    ("iteration 10**5000", lambda: pt.current_run().iteration(10**5000),  # type: ignore[union-attr]
     {(ITER, "out_of_range"): 1}, "p"),
    ("provider whose str raises", lambda: pt.current_run().record_tokens(  # type: ignore[union-attr]
        provider=_Unprintable(), model="gpt-4o", input_tokens=1),
     {(TOK, "wrong_type"): 1, (COST, "unpriced_model"): 1}, "p"),
    ("status 10**5000", lambda: setattr(pt.current_run(), "status", 10**5000),
     {(RUN, "invalid_value"): 1}, "p"),
    ("status whose everything raises", lambda: setattr(pt.current_run(), "status", _Bottomless()),
     {(RUN, "invalid_value"): 1}, "p"),
    ("score whose everything raises", lambda: pt.record_quality_score(_Bottomless(), prompt_slug="s"),
     {(QUAL, "wrong_type"): 1}, "p"),
]


@pytest.mark.parametrize(("case", "call", "drops", "project"), ODD, ids=[c[0] for c in ODD])
def test_odd_values_inside_a_run_still_end_its_span_and_count_it(
    recorded: Recorded, case: str, call: Callable[[], None], drops: dict[tuple[str, str], int], project: str,
) -> None:
    with pt.agent_run(project_id=project, agent_type="a"):
        call()
    assert pt.current_run() is None
    status = "other" if case.startswith("status") else "completed"
    assert recorded.points(RUN) == {(("agent_type", "a"), ("project_id", project), ("status", status)): 1}
    assert _drops(recorded) == drops
    (span,) = recorded.spans()
    assert span.end_time is not None
    assert span.attributes["paid.agent_run.status"] == status


def test_a_project_id_whose_hash_raises_is_still_counted(recorded: Recorded) -> None:
    with pt.agent_run(project_id=_Unhashable(), agent_type="a") as run:
        run.record_tokens(provider="openai", model="gpt-4o", input_tokens=3, cost_cents=1)
        pt.record_token_usage(provider="openai", model="gpt-4o", input_tokens=4, cost_cents=0)
        pt.record_quality_score(0.5, prompt_slug="s")
    assert recorded.points(RUN) == {(("agent_type", "a"), ("project_id", "proj-h"), ("status", "completed")): 1}
    assert recorded.value(TOK, project_id="proj-h", provider="openai", model="gpt-4o", type="input") == 7
    assert recorded.value(QUAL, project_id="proj-h", prompt_slug="s").count == 1
    assert not [k for k in _drops(recorded) if k[1] == "internal_error"]
    (span,) = recorded.spans()
    assert span.end_time is not None and span.attributes["paid.project_id"] == "proj-h"


def test_a_raising_end_hook_is_counted_and_the_run_still_ends(recorded: Recorded) -> None:
    agents.add_run_end_hook(_raising_hook)
    try:
        with pt.agent_run(project_id="p", agent_type="a"):
            pass
    finally:
        agents.remove_run_end_hook(_raising_hook)
    assert recorded.value(RUN, project_id="p", agent_type="a", status="completed") == 1
    assert _drops(recorded) == {("agent_run end hook", "internal_error"): 1}
    assert recorded.spans()[0].end_time is not None


# -- strict mode: the agent's exception wins ------------------------------------------------------
def _strict_cases() -> list[tuple[str, Callable[[BaseException], None]]]:
    def run(exc: BaseException) -> None:
        with pt.agent_run(project_id=None, agent_type="a"):
            raise exc

    def external(exc: BaseException) -> None:
        with pt.external_call("svc", "op") as call:
            call.outcome = "meh"
            raise exc

    def workflow(exc: BaseException) -> None:
        with pt.workflow("w") as wf:
            wf.status = "meh"
            raise exc

    def decorated(exc: BaseException) -> None:
        @pt.agent_run(project_id=None, agent_type="a")
        def agent() -> None:
            raise exc
        agent()

    def generator(exc: BaseException) -> None:
        @pt.agent_run(project_id=None, agent_type="a")
        def agent() -> Iterator[int]:
            yield 1
            raise exc
        list(agent())

    return [("agent_run", run), ("external_call", external), ("workflow", workflow),
            ("decorated function", decorated), ("decorated generator", generator)]


@pytest.mark.parametrize(("case", "call"), _strict_cases(), ids=[c[0] for c in _strict_cases()])
def test_strict_mode_never_replaces_the_agents_exception(
    strict_recorded: Recorded, case: str, call: Callable[[BaseException], None],
) -> None:
    boom = KeyError("agent bug")
    with pytest.raises(KeyError) as info:
        call(boom)
    assert info.value is boom
    notes = getattr(boom, "__notes__", [])
    assert len(notes) == 1 and notes[0].startswith("paid-telemetry (strict mode): "), notes
    assert [s.end_time is not None for s in strict_recorded.spans()] == [True]
    assert pt.current_run() is None


def _end(scope: Any, attr: str) -> None:
    with scope as s:
        setattr(s, attr, "meh")


@pytest.mark.parametrize("call", [
    lambda: _end(pt.agent_run(project_id="p", agent_type="a"), "status"),
    lambda: _end(pt.external_call("svc", "op"), "outcome"),
    lambda: _end(pt.workflow("w"), "status"),
], ids=["agent_run", "external_call", "workflow"])
def test_strict_mode_raises_ours_after_the_span_ended_when_the_agent_raised_nothing(
    strict_recorded: Recorded, call: Callable[[], None],
) -> None:
    with pytest.raises(pt.TelemetryInputError, match="invalid_value"):
        call()
    assert [s.end_time is not None for s in strict_recorded.spans()] == [True]
    assert pt.current_run() is None


# -- only numbers are numbers ---------------------------------------------------------------------
REJECTED = ["100", b"100", bytearray(b"7"), "\uff11\uff12", " 3 ", np.bool_(True), np.bool_(False), [1], 1j,
            np.array([5])]


@pytest.mark.parametrize("value", REJECTED, ids=[repr(v) for v in REJECTED])
def test_numeric_strings_bytes_and_numpy_bools_are_wrong_type(recorded: Recorded, value: Any) -> None:
    with pt.agent_run(project_id="p", agent_type="a") as run:
        run.iteration(value)
        run.record_tokens(provider="openai", model="gpt-4o", input_tokens=value, output_tokens=value,
                          cost_cents=value)
    pt.record_quality_score(value, prompt_slug="s", project_id="p")
    assert recorded.points(TOK) == {}
    assert recorded.points(COST) == {}
    assert recorded.points(QUAL) == {}
    assert recorded.value(ITER, project_id="p", agent_type="a").sum == 0
    assert _drops(recorded) == {(ITER, "wrong_type"): 1, (TOK, "wrong_type"): 2, (COST, "wrong_type"): 1,
                                (QUAL, "wrong_type"): 1}


def test_score_and_iteration_strings_are_wrong_type(recorded: Recorded) -> None:
    pt.record_quality_score("0.5", prompt_slug="s", project_id="p")  # type: ignore[arg-type]
    with pt.agent_run(project_id="p", agent_type="a") as run:
        run.iteration("3")  # type: ignore[arg-type]
    assert recorded.points(QUAL) == {}
    assert _drops(recorded) == {(QUAL, "wrong_type"): 1, (ITER, "wrong_type"): 1}


ACCEPTED: list[tuple[Any, float]] = [
    (7, 7), (2.5, 2.5), (Decimal("2.5"), 2.5), (Fraction(5, 2), 2.5), (np.int64(7), 7), (np.uint8(7), 7),
    (np.float32(0.5), 0.5), (np.float64(2.5), 2.5),
]


@pytest.mark.parametrize(("value", "amount"), ACCEPTED, ids=[repr(v) for v, _ in ACCEPTED])
def test_real_numbers_of_any_numeric_type_are_accepted(recorded: Recorded, value: Any, amount: float) -> None:
    with pt.agent_run(project_id="p", agent_type="a") as run:
        run.record_tokens(provider="openai", model="gpt-4o", input_tokens=value, cost_cents=value)
    labels = {"project_id": "p", "provider": "openai"}
    assert recorded.value(TOK, model="gpt-4o", type="input", **labels) == pytest.approx(amount)
    assert recorded.value(COST, **labels) == pytest.approx(amount)
    score = value / 10 if not isinstance(value, Decimal) else value / Decimal(10)
    pt.record_quality_score(score, prompt_slug="s", project_id="p")
    assert recorded.value(QUAL, project_id="p", prompt_slug="s").sum == pytest.approx(amount / 10)
    assert _drops(recorded) == {}


ODD_NUMBERS = [
    (Decimal("sNaN"), "not_finite"), (Decimal("-Infinity"), "not_finite"), (Fraction(10**400, 3), "out_of_range"),
    (np.float64("nan"), "not_finite"), (np.int64(-3), "negative"), (10**5000, "out_of_range"),
]


@pytest.mark.parametrize(("value", "reason"), ODD_NUMBERS, ids=[type(v).__name__ + "-" + r for v, r in ODD_NUMBERS])
def test_odd_numbers_get_their_reason(recorded: Recorded, value: Any, reason: str) -> None:
    pt.record_token_usage(provider="openai", model="gpt-4o", input_tokens=value, cost_cents=0, project_id="p")
    assert _drops(recorded) == {(TOK, reason): 1}


# -- bounded memory: model strings, price caches, span names and attributes ---------------------
def _heap_growth(fn: Callable[[], None]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        fn()
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    return sum(s.size_diff for s in after.compare_to(before, "filename"))


def test_huge_model_names_are_unpriced_and_never_kept(recorded: Recorded) -> None:
    recorded.handle.prices.warm_up()
    big = "m" * 2**20

    def record() -> None:
        for i in range(50):
            pt.record_token_usage(provider="openai", model=f"{big}{i}", input_tokens=1, project_id="p")

    record()  # first pass: warnings, label sets
    growth = _heap_growth(record)
    print(f"\n50 more 1 MiB model names: Python heap {growth / 1024:+.1f} KiB")
    assert growth < 256 * 1024  # one kept name would be 1 MiB
    assert _drops(recorded) == {(TOK, "label_too_long"): 100, (COST, "unpriced_model"): 100}
    assert recorded.value(TOK, project_id="p", provider="openai", model="m" * 128, type="input") == 100


def test_many_model_names_keep_the_price_caches_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bound is ``pricing._MAX_ENTRIES`` (4096); a smaller one here keeps the test quick.
    genai-prices' own caches, which kept every name ever asked for, are emptied with ours.
    (The label sets are capped by ``cardinality_limit``, tested in test_bad_input.py.)"""
    from genai_prices import data_snapshot

    monkeypatch.setattr(pricing, "_MAX_ENTRIES", 200)
    rec = make_recorded(cardinality_limit=20)
    try:
        book = rec.handle.prices
        book.warm_up()
        snapshot = data_snapshot.get_snapshot()

        def record(start: int, n: int) -> None:
            for i in range(start, start + n):
                pt.record_token_usage(provider="openai", model=f"model-{i}", input_tokens=1, project_id="p")

        record(0, 1000)
        growth = _heap_growth(lambda: record(1000, 2000))
        print(f"\n2000 more distinct model names: Python heap {growth / 1024:+.1f} KiB")
        assert len(book._rates) <= 200
        for name in ("_lookup_cache", "_provider_cache", "_provider_misses"):
            assert len(getattr(snapshot, name)) <= 200, name
        assert growth < 200 * 1024  # unbounded, 2000 names cost > 1 MiB across the four caches
        assert _drops(rec)[(COST, "unpriced_model")] == 3000
        assert book.rates("openai", "gpt-4o") is not None  # still prices after a trim
    finally:
        pt.shutdown()


def test_span_names_and_attributes_are_cut(recorded: Recorded) -> None:
    big = "x" * 2**20
    with pt.agent_run(project_id=big, agent_type=big, attributes={"app.note": big}) as run:
        run.record_tokens(provider=big, model=big, input_tokens=1, cost_cents=1)
        with pt.external_call(big, big):
            pass
        with pt.workflow(big):
            pass
    spans = recorded.spans()
    assert len(spans) == 3
    for span in spans:
        assert len(span.name) <= 256
        for key, value in span.attributes.items():
            assert not isinstance(value, str) or len(value) <= 4096, key
    run_span = next(s for s in spans if s.name.startswith("invoke_agent"))
    assert run_span.attributes["app.note"] == "x" * 4096
    assert run_span.attributes["gen_ai.agent.name"] == "x" * 4096


def test_the_attribute_limit_follows_the_standard_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "10")
    rec = make_recorded()
    try:
        with pt.agent_run(project_id="p", agent_type="a", attributes={"app.note": "y" * 100}):
            pass
        assert rec.spans()[0].attributes["app.note"] == "y" * 10
    finally:
        pt.shutdown()


# -- property: arbitrary objects into every recording function ------------------------------------
_HUGE = 10**5000
_ODD = st.one_of(
    st.none(), st.booleans(), st.integers(), st.just(_HUGE), st.just(-_HUGE), st.floats(),
    st.text(max_size=30), st.binary(max_size=10), st.decimals(), st.fractions(),
    st.sampled_from([np.bool_(True), np.int64(3), np.float32("nan"), np.array([1, 2]), np.float64(0.5)]),
    st.builds(_Unprintable), st.builds(_Unhashable), st.builds(_Bottomless),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.just("x" * 5000), st.just("\ud800"), st.just(object()),
)


@pytest.fixture(scope="module")
def odd_rec() -> Iterator[Recorded]:
    rec = make_recorded(cardinality_limit=50)
    yield rec
    pt.shutdown()


def _feed(values: list[Any]) -> int:
    """Every public recording function, fed ``values`` in turn; returns how many runs it opened."""
    it = itertools.cycle(values)

    def v() -> Any:
        return next(it)

    with pt.agent_run(project_id=v(), agent_type=v(), run_id=v(), attributes=v()) as run:
        run.iteration(v())
        run.record_tokens(provider=v(), model=v(), input_tokens=v(), output_tokens=v(), cost_cents=v())
        run.record_tokens(provider="openai", model=v(), input_tokens=v(), output_tokens=v())
        run.record_quality(v(), prompt_slug=v())
        pt.record_token_usage(provider=v(), model=v(), input_tokens=v(), output_tokens=v(), cost_cents=v(),
                              project_id=v())
        pt.record_quality_score(v(), prompt_slug=v(), project_id=v())
        pt.record_pull_request(v(), project_id=v())
        with pt.external_call(v(), v()) as call:
            call.outcome = v()
        with pt.workflow(v()) as wf:
            wf.status = v()
        with pt.agent_run(project_id=v(), agent_type=v()) as inner:
            inner.status = v()
        run.status = v()
    return 2


def _run_total(rec: Recorded) -> float:
    return sum(rec.points(RUN).values())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(_ODD, min_size=1, max_size=8))
def test_arbitrary_objects_never_raise_and_every_run_and_span_ends(odd_rec: Recorded, values: list[Any]) -> None:
    odd_rec.exporter.clear()
    before = _run_total(odd_rec)
    runs = _feed(values)
    assert pt.current_run() is None
    assert _run_total(odd_rec) - before == runs
    spans = odd_rec.spans()
    assert len(spans) == runs + 2  # two runs, one external call, one workflow: all ended and exported
    assert all(s.end_time is not None for s in spans)
    m = odd_rec.handle.metrics
    for sets in (m.run_labels, m.token_labels, m.cost_labels, m.quality_labels, m.pr_labels, m.external_labels):
        assert len(sets) <= 2 * 50  # open labels fold past the cap (+ one set per closed value)
    assert len(odd_rec.handle.prices._rates) <= pricing._MAX_ENTRIES


def test_arbitrary_objects_keep_memory_bounded() -> None:
    rec = make_recorded(cardinality_limit=50)
    try:
        rec.handle.prices.warm_up()
        values = [_HUGE, _Unprintable(), _Unhashable(), _Bottomless(), "x" * 5000, b"1", np.bool_(True),
                  math.nan, -1, None, [1], {"a": 1}, Decimal("sNaN"), "\ud800", object()]
        shifted = [values[i:] + values[:i] for i in range(len(values))]
        for i in range(300):  # warm: every label set, warning and cache entry that will ever exist
            _feed(shifted[i % len(shifted)])
            rec.exporter.clear()  # the in-memory exporter keeps every span: not ours to measure

        def more() -> None:
            for i in range(1500):
                _feed(shifted[i % len(shifted)])
                rec.exporter.clear()

        growth = _heap_growth(more)
        print(f"\n1500 more runs of odd values: Python heap {growth / 1024:+.1f} KiB")
        assert growth < 128 * 1024
    finally:
        pt.shutdown()
