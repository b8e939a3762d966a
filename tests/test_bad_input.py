"""Bad input through the public API only: never an exception into the caller (unless strict),
always the right ``paid_telemetry_dropped_records_total`` reason, one warning per kind, bounded
memory. Extends the cases of test_core.py (tokens, scores, pull requests) to every argument.
"""

from __future__ import annotations

import gc
import io
import json
import logging
import math
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import paid_telemetry as pt
from paid_telemetry.guard import MAX_COUNT
from tests.conftest import Recorded, make_recorded

DROPPED = "paid_telemetry_dropped_records"
Expect = dict[tuple[str, str], int]  # (instrument, reason) -> records dropped per call


class _Unprintable:
    """A value whose str() and repr() raise, as a broken domain object might."""

    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def _run(project: Any = "p", agent: Any = "a", **kwargs: Any) -> Callable[[], None]:
    def call() -> None:
        with pt.agent_run(project_id=project, agent_type=agent, **kwargs):
            pass
    return call


def _tokens(**kwargs: Any) -> Callable[[], None]:
    args: dict[str, Any] = {"provider": "openai", "model": "gpt-4o", "input_tokens": 10, "cost_cents": 1.0, **kwargs}

    def call() -> None:
        with pt.agent_run(project_id="p", agent_type="a") as run:
            run.record_tokens(**args)
    return call


def _usage(**kwargs: Any) -> Callable[[], None]:
    args: dict[str, Any] = {"provider": "openai", "model": "gpt-4o", "input_tokens": 10, "cost_cents": 1.0,
                            "project_id": "p", **kwargs}
    return lambda: pt.record_token_usage(**args)


def _score(score: Any = 0.5, **kwargs: Any) -> Callable[[], None]:
    args: dict[str, Any] = {"prompt_slug": "s", "project_id": "p", **kwargs}
    return lambda: pt.record_quality_score(score, **args)


def _external(service: Any = "github", operation: Any = "op", outcome: Any = None) -> Callable[[], None]:
    def call() -> None:
        with pt.external_call(service, operation) as c:
            if outcome is not None:
                c.outcome = outcome
    return call


def _workflow(workflow_type: Any = "w", status: Any = None) -> Callable[[], None]:
    def call() -> None:
        with pt.workflow(workflow_type) as w:
            if status is not None:
                w.status = status
    return call


RUN, RUN_DUR, ITER = "paid_agent_runs", "paid_agent_run_duration", "paid_agent_iterations"
TOK, COST, QUAL, PR = "paid_tokens", "paid_cost_cents", "paid_quality_score", "paid_pull_requests"
EXT, EXT_DUR = "paid_external_api_requests", "paid_external_api_request_duration"
WF_START, WF_DONE = "paid_workflow_started", "paid_workflow_completed"

# (id, call, expected drops per call, whether strict mode must raise)
CASES: list[tuple[str, Callable[[], None], Expect, bool]] = [
    # agent_run(project_id, agent_type): labels of the run counter and of the duration/iterations histograms
    ("run project None", _run(project=None), {(RUN, "wrong_type"): 1, (RUN_DUR, "wrong_type"): 1}, True),
    ("run project dict", _run(project={"a": 1}), {(RUN, "wrong_type"): 1, (RUN_DUR, "wrong_type"): 1}, True),
    ("run project empty", _run(project=""), {(RUN, "empty_label"): 1, (RUN_DUR, "empty_label"): 1}, True),
    ("run project blank", _run(project="   "), {(RUN, "empty_label"): 1, (RUN_DUR, "empty_label"): 1}, True),
    ("run project 10 kB", _run(project="x" * 10_000),
     {(RUN, "label_too_long"): 1, (RUN_DUR, "label_too_long"): 1}, True),
    ("run agent None", _run(agent=None), {(RUN, "wrong_type"): 1, (RUN_DUR, "wrong_type"): 1}, True),
    ("run agent float", _run(agent=1.5), {(RUN, "wrong_type"): 1, (RUN_DUR, "wrong_type"): 1}, True),
    ("run agent list", _run(agent=["x"]), {(RUN, "wrong_type"): 1, (RUN_DUR, "wrong_type"): 1}, True),
    ("run agent 10 kB", _run(agent="a" * 10_000), {(RUN, "label_too_long"): 1, (RUN_DUR, "label_too_long"): 1},
     True),
    ("run attributes not a dict", _run(attributes="zz"), {("agent_run", "internal_error"): 1}, True),
    # record_tokens: every argument
    ("tokens provider None", _tokens(provider=None), {(TOK, "wrong_type"): 1, (COST, "wrong_type"): 1}, True),
    ("tokens model list", _tokens(model=["m"]), {(TOK, "wrong_type"): 1}, True),
    ("tokens model 10 kB", _tokens(model="m" * 10_000), {(TOK, "label_too_long"): 1}, True),
    ("tokens provider empty", _tokens(provider=""), {(TOK, "empty_label"): 1, (COST, "empty_label"): 1}, True),
    ("tokens input NaN", _tokens(input_tokens=math.nan), {(TOK, "not_finite"): 1}, True),
    ("tokens input -inf", _tokens(input_tokens=-math.inf), {(TOK, "not_finite"): 1}, True),
    ("tokens output negative", _tokens(output_tokens=-1), {(TOK, "negative"): 1}, True),
    ("tokens output 10**400", _tokens(output_tokens=10**400), {(TOK, "out_of_range"): 1}, True),
    ("tokens input list", _tokens(input_tokens=[1]), {(TOK, "wrong_type"): 1}, True),
    ("tokens input bool", _tokens(input_tokens=True), {(TOK, "wrong_type"): 1}, True),
    ("tokens input Decimal NaN", _tokens(input_tokens=Decimal("NaN")), {(TOK, "not_finite"): 1}, True),
    ("tokens cost negative", _tokens(cost_cents=-1.0), {(COST, "negative"): 1}, True),
    ("tokens cost inf", _tokens(cost_cents=math.inf), {(COST, "not_finite"): 1}, True),
    ("tokens cost 1e300", _tokens(cost_cents=1e300), {(COST, "out_of_range"): 1}, True),
    ("tokens cost string", _tokens(cost_cents="cheap"), {(COST, "wrong_type"): 1}, True),
    ("tokens unknown provider", _tokens(provider="acme-ai", cost_cents=None), {(COST, "unpriced_model"): 1}, False),
    ("tokens unknown model", _tokens(model="gpt-99", cost_cents=None), {(COST, "unpriced_model"): 1}, False),
    # record_token_usage: the arguments record_tokens does not have
    ("usage project None", _usage(project_id=None), {(TOK, "wrong_type"): 1, (COST, "wrong_type"): 1}, True),
    ("usage project 10 kB", _usage(project_id="p" * 10_000),
     {(TOK, "label_too_long"): 1, (COST, "label_too_long"): 1}, True),
    ("usage provider int", _usage(provider=5, cost_cents=None), {(COST, "unpriced_model"): 1}, False),
    ("usage output NaN", _usage(output_tokens=math.nan), {(TOK, "not_finite"): 1}, True),
    # record_quality_score: every argument
    ("score NaN", _score(math.nan), {(QUAL, "not_finite"): 1}, True),
    ("score inf", _score(math.inf), {(QUAL, "not_finite"): 1}, True),
    ("score negative", _score(-0.1), {(QUAL, "negative"): 1}, True),
    ("score huge", _score(10**30), {(QUAL, "out_of_range"): 1}, True),
    ("score string", _score("good"), {(QUAL, "wrong_type"): 1}, True),
    ("score bool", _score(True), {(QUAL, "wrong_type"): 1}, True),
    ("score slug None", _score(prompt_slug=None), {(QUAL, "wrong_type"): 1}, True),
    ("score slug 10 kB", _score(prompt_slug="s" * 10_000), {(QUAL, "label_too_long"): 1}, True),
    ("score project None outside a run", _score(project_id=None), {(QUAL, "wrong_type"): 1}, True),
    # record_pull_request: event is a closed label, project_id an open one
    ("pr event None", lambda: pt.record_pull_request(None, project_id="p"),  # type: ignore[arg-type]
     {(PR, "invalid_value"): 1}, True),
    ("pr event list", lambda: pt.record_pull_request(["created"], project_id="p"),  # type: ignore[arg-type]
     {(PR, "invalid_value"): 1}, True),
    ("pr project None", lambda: pt.record_pull_request("created", project_id=None),
     {(PR, "wrong_type"): 1}, True),
    # external_call: service, operation and the outcome a caller may set
    ("external service None", _external(service=None), {(EXT, "wrong_type"): 1, (EXT_DUR, "wrong_type"): 1}, True),
    ("external service dict", _external(service={"a": 1}),
     {(EXT, "wrong_type"): 1, (EXT_DUR, "wrong_type"): 1}, True),
    ("external operation 10 kB", _external(operation="o" * 10_000),
     {(EXT, "label_too_long"): 1, (EXT_DUR, "label_too_long"): 1}, True),
    ("external operation empty", _external(operation=""), {(EXT, "empty_label"): 1, (EXT_DUR, "empty_label"): 1},
     True),
    ("external outcome unknown", _external(outcome="meh"), {(EXT, "invalid_value"): 1}, True),
    # workflow: the status a caller may set (workflow_type: see the cases below)
    ("workflow status unknown", _workflow(status="meh"), {(WF_DONE, "invalid_value"): 1}, True),
]


def _drops(rec: Recorded) -> dict[tuple[str, str], float]:
    return {(dict(k)["instrument"], dict(k)["reason"]): v for k, v in rec.points(DROPPED).items()}


@pytest.mark.parametrize(("case", "call", "expected", "strict_raises"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_counted_once_per_record_and_warned_once(
    recorded: Recorded, caplog: pytest.LogCaptureFixture,
    case: str, call: Callable[[], None], expected: Expect, strict_raises: bool,
) -> None:
    with caplog.at_level(logging.WARNING, logger="paid_telemetry"):
        call()
        call()
    assert _drops(recorded) == {k: 2 * n for k, n in expected.items()}, case
    warnings = [r for r in caplog.records if r.name == "paid_telemetry" and r.levelno == logging.WARNING]
    assert len(warnings) == len(expected), [r.getMessage() for r in warnings]  # one per (instrument, reason)
    for instrument, reason in expected:
        assert sum(f"{reason} input to {instrument} " in r.getMessage() for r in warnings) == 1


@pytest.mark.parametrize(("case", "call", "expected", "strict_raises"), CASES, ids=[c[0] for c in CASES])
def test_strict_mode_raises_for_every_bad_input(
    strict_recorded: Recorded, case: str, call: Callable[[], None], expected: Expect, strict_raises: bool
) -> None:
    if strict_raises:
        with pytest.raises(pt.TelemetryInputError):
            call()
    else:  # an unpriced model is a fact of life, not a caller's bug: counted, never raised
        call()
        assert _drops(strict_recorded) == expected


def test_sanitised_values_land_in_the_right_series(recorded: Recorded) -> None:
    """Dropped amounts record nothing; sanitised labels record under unknown / truncated / other."""
    _run(project=None)()
    _run(agent="a" * 300)()
    _tokens(input_tokens=math.nan, output_tokens=7)()
    _score(1.5)()
    _external(outcome="meh")()
    assert recorded.points(RUN) == {
        (("agent_type", "a"), ("project_id", "unknown"), ("status", "completed")): 1,
        (("agent_type", "a" * 128), ("project_id", "p"), ("status", "completed")): 1,
        (("agent_type", "a"), ("project_id", "p"), ("status", "completed")): 1,
    }
    assert recorded.points(TOK) == {(("model", "gpt-4o"), ("project_id", "p"), ("provider", "openai"),
                                     ("type", "output")): 7}
    assert recorded.points(QUAL) == {}
    assert recorded.points(EXT) == {(("operation", "op"), ("outcome", "other"), ("service", "github")): 1}


def test_an_exception_in_a_run_is_still_the_callers_with_bad_labels(recorded: Recorded) -> None:
    boom = KeyError("agent bug")
    with pytest.raises(KeyError) as info, pt.agent_run(project_id=None, agent_type=None):
        raise boom
    assert info.value is boom
    assert recorded.value(RUN, project_id="unknown", agent_type="unknown", status="failed") == 1


# -- gaps found by these tests and fixed -----------------------------------------------------------
@pytest.mark.parametrize("n", ["x", None, [1]])
def test_iteration_with_a_wrong_type_never_raises(recorded: Recorded, n: Any) -> None:
    with pt.agent_run(project_id="p", agent_type="a") as run:
        run.iteration(n)
    assert _drops(recorded) == {(ITER, "wrong_type"): 1}


def test_bad_workflow_type_is_reported_per_instrument(recorded: Recorded) -> None:
    _workflow(None)()
    assert _drops(recorded) == {(WF_START, "wrong_type"): 1, ("paid_workflow_duration", "wrong_type"): 1,
                                (WF_DONE, "wrong_type"): 1}


@pytest.mark.parametrize("tokens", ["", []])
def test_falsy_wrong_type_tokens_are_reported(recorded: Recorded, tokens: Any) -> None:
    _usage(input_tokens=tokens)()
    assert _drops(recorded) == {(TOK, "wrong_type"): 1}


def test_a_label_whose_str_raises_still_counts_the_run(recorded: Recorded) -> None:
    _run(agent=_Unprintable())()
    assert recorded.value(RUN, project_id="p", agent_type="unknown", status="completed") == 1


def test_values_whose_str_or_float_raise_never_reach_the_caller(recorded: Recorded) -> None:
    _run(agent=_Unprintable())()
    _tokens(input_tokens=_FloatRaises())()
    _score(_FloatRaises())()
    drops = _drops(recorded)
    assert drops[(TOK, "wrong_type")] == 1
    assert drops[("paid_quality_score", "wrong_type")] == 1
    assert not [key for key in drops if key[1] == "internal_error"]


class _FloatRaises:
    def __float__(self) -> float:
        raise RuntimeError("no float")


def test_none_tokens_mean_not_given(recorded: Recorded) -> None:
    """LLM clients report missing usage as None: recorded as nothing, not as an error."""
    _usage(input_tokens=None, output_tokens=None)()
    assert recorded.points(TOK) == {}
    assert _drops(recorded) == {}


# -- a million distinct project ids ------------------------------------------------------------
def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_a_million_project_ids_keep_memory_bounded_and_count_the_overflow() -> None:
    limit, n = 100, 1_000_000
    rec = make_recorded(cardinality_limit=limit)
    try:
        rec.handle.prices.warm_up()  # the price table (~5 MiB) must not load inside the measured window
        for i in range(100_000):
            pt.record_pull_request("created", project_id=f"project-{i}")
        gc.collect()
        tracemalloc.start()  # traced slice: tracemalloc makes each call ~5x slower
        try:
            first = tracemalloc.take_snapshot()
            for i in range(100_000, 200_000):
                pt.record_pull_request("created", project_id=f"project-{i}")
            gc.collect()
            second = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        heap = sum(s.size_diff for s in second.compare_to(first, "filename"))
        rss_before = _rss()
        for i in range(200_000, n):
            pt.record_pull_request("created", project_id=f"project-{i}")
        gc.collect()
        rss = _rss() - rss_before
        print(f"\n100k new project ids: Python heap {heap / 1024:+.1f} KiB; next 800k: RSS {rss / 2**20:+.1f} MiB")
        # 100k ids of ~14 characters kept anywhere would be > 5 MiB: nothing may grow per id
        assert heap < 64 * 1024
        assert rss < 8 * 2**20
        points = rec.points(PR)
        assert len(points) == limit + 1
        assert points[(("event", "created"), ("project_id", "_overflow"))] == n - limit
        assert _drops(rec) == {(PR, "cardinality_overflow"): n - limit}
        assert len(rec.handle.metrics.pr_labels) == limit + 1
        assert len(rec.handle.metrics.known_projects) == limit
    finally:
        pt.shutdown()


# -- logs with values JSON cannot encode ---------------------------------------------------------
@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    from paid_telemetry.logs import configure_logging

    stream = io.StringIO()
    configure_logging(json=True, stream=stream, otel=False, stdlib=False)
    yield stream
    structlog.reset_defaults()
    from paid_telemetry import agents, logs

    agents.remove_run_end_hook(logs.log_run_end)  # the run-end line is process-wide; later tests don't want it


def test_non_serialisable_log_values_never_raise(json_log: io.StringIO) -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    log = structlog.get_logger("paid_telemetry")
    log.info("odd values", obj=object(), unprintable=_Unprintable(), nan=math.nan, inf=-math.inf,
             raw=b"\xff\x00", cyclic=cyclic, big=10**400, keys={1: "a", (2, 3): "b"}, s={1, 2})
    log.info("after")
    lines = [json.loads(x) for x in json_log.getvalue().splitlines()]
    assert [x["message"] for x in lines] == ["odd values", "after"]
    first = lines[0]
    assert first["nan"] == "nan" and first["inf"] == "-inf"  # never the invalid JSON NaN/Infinity
    assert first["unprintable"] == "<unrepresentable _Unprintable>"
    assert first["big"] == 10**400 or first["big"] == repr(10**400)


# -- property: arbitrary values never raise, and totals are the sum of the valid ones -----------
_ANY = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**20), max_value=10**20), st.floats(allow_nan=True,
                                                                                          allow_infinity=True),
    st.text(max_size=20), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                                max_size=2),
    st.decimals(allow_nan=True, allow_infinity=True), st.integers(0, 1000).map(str),
)


def _accepted(value: Any) -> float:
    """The amount the SDK must record for ``value`` (0 when it must drop it): numbers only,
    never a bool or a numeric string."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal) or not value:
        return 0.0
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return number if 0 <= number <= MAX_COUNT else 0.0


def _total(rec: Recorded, name: str, **labels: str) -> float:
    total = 0.0
    for key, value in rec.points(name).items():
        if all(dict(key).get(k) == v for k, v in labels.items()):
            total += value if isinstance(value, int | float) else value.sum
    return total


@pytest.fixture(scope="module")
def prop_rec() -> Iterator[Recorded]:
    rec = make_recorded(cardinality_limit=50)
    yield rec
    pt.shutdown()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tin=_ANY, tout=_ANY, cost=_ANY, score=_ANY, project=_ANY, model=_ANY, slug=_ANY, event=_ANY, service=_ANY)
def test_recording_api_never_raises_and_totals_are_the_valid_sum(
    prop_rec: Recorded, tin: Any, tout: Any, cost: Any, score: Any, project: Any, model: Any, slug: Any,
    event: Any, service: Any,
) -> None:
    before = {("in",): _total(prop_rec, TOK, type="input"), ("out",): _total(prop_rec, TOK, type="output"),
              ("cost",): _total(prop_rec, COST), ("score",): _total(prop_rec, QUAL),
              ("runs",): _total(prop_rec, RUN), ("prs",): _total(prop_rec, PR), ("ext",): _total(prop_rec, EXT)}
    with pt.agent_run(project_id=project, agent_type=model) as run:
        run.record_tokens(provider="openai", model=model, input_tokens=tin, output_tokens=tout,
                          cost_cents=cost if cost is not None else 0)
        pt.record_quality_score(score, prompt_slug=slug)
    pt.record_pull_request(event, project_id=project)
    with pt.external_call(service, model):
        pass
    with pt.workflow(service):
        pass
    tin_ok, tout_ok = _accepted(tin), _accepted(tout)
    score_ok = _accepted(score)
    score_ok = score_ok if score_ok <= 1 else 0.0
    def ulps(key: str) -> float:  # running totals grow large across examples: allow float rounding
        return 1e-6 + 8 * sys.float_info.epsilon * abs(before[(key,)])

    assert _total(prop_rec, TOK, type="input") - before[("in",)] == pytest.approx(tin_ok, rel=1e-9, abs=ulps("in"))
    assert _total(prop_rec, TOK, type="output") - before[("out",)] == pytest.approx(tout_ok, rel=1e-9,
                                                                                   abs=ulps("out"))
    assert _total(prop_rec, COST) - before[("cost",)] == pytest.approx(_accepted(cost), rel=1e-9, abs=ulps("cost"))
    assert _total(prop_rec, QUAL) - before[("score",)] == pytest.approx(score_ok, abs=1e-9)
    # one run, one pull request and one external call whatever the labels were
    assert _total(prop_rec, RUN) - before[("runs",)] == 1
    assert _total(prop_rec, PR) - before[("prs",)] == 1
    assert _total(prop_rec, EXT) - before[("ext",)] == 1
