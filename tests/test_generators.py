"""Decorated generators and async generators (issue 17): a generator's run (or workflow, or
external call) is current only while the generator's own code runs, never in the caller between
two steps; it ends, with its duration, iterations and status, however the generator ends.

Every recording inside a step carries no project id: it lands on whatever run is current, so the
exact per-project totals show where each one went. Span parents are checked by name.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace

import paid_telemetry as pt
from tests.conftest import Recorded

RUN, DUR, ITER, TOK = "paid_agent_runs", "paid_agent_run_duration", "paid_agent_iterations", "paid_tokens"
QUAL = "paid_quality_score"


def _tokens(n: int = 1) -> None:
    """n input tokens on the current run (no project id given)."""
    pt.record_token_usage(provider="openai", model="gpt-4o", input_tokens=n, cost_cents=0)


def _tokens_by_project(rec: Recorded) -> dict[str, float]:
    return {dict(k)["project_id"]: v for k, v in rec.points(TOK).items()}


def _runs(rec: Recorded) -> dict[tuple[str, str], int]:
    """(project, status) -> runs."""
    return {(dict(k)["project_id"], dict(k)["status"]): v for k, v in rec.points(RUN).items()}


def _span(rec: Recorded, name: str) -> Any:
    spans = [s for s in rec.spans() if s.name == name]
    assert len(spans) == 1, [s.name for s in rec.spans()]
    return spans[0]


def _parent(rec: Recorded, name: str) -> str | None:
    """The name of span ``name``'s parent, or None for a root span."""
    span = _span(rec, name)
    if span.parent is None:
        return None
    parents = [s.name for s in rec.spans() if s.context.span_id == span.parent.span_id]
    assert len(parents) == 1
    return parents[0]


def _no_current() -> bool:
    return pt.current_run() is None and not trace.get_current_span().get_span_context().is_valid


@pt.agent_run(project_id="gen", agent_type="gen")
def steps(n: int) -> Iterator[int]:
    """Each step: one iteration, i+1 tokens and a child external call, on the generator's run."""
    for i in range(n):
        run = pt.current_run()
        assert run is not None and run.project_id == "gen"
        run.iteration()
        _tokens(i + 1)
        with pt.external_call("svc", f"gen step {i}"):
            pass
        yield i


# -- sync generators ----------------------------------------------------------------------------
def test_between_steps_the_caller_sees_its_own_context(recorded: Recorded) -> None:
    g = steps(3)
    assert next(g) == 0
    assert _no_current()  # the suspended generator's run is not the caller's
    _tokens(100)  # no run: project "unknown"
    pt.record_quality_score(0.5, prompt_slug="s")
    with pt.agent_run(project_id="caller", agent_type="caller"):
        _tokens(10)
        assert next(g) == 1  # a step inside the caller's run still records on the generator's run
        assert pt.current_run() is not None and pt.current_run().project_id == "caller"  # type: ignore[union-attr]
        with pt.external_call("svc", "caller call"):
            pass
    assert next(g) == 2
    with pytest.raises(StopIteration):
        next(g)
    assert _no_current()
    assert _tokens_by_project(recorded) == {"gen": 1 + 2 + 3, "unknown": 100, "caller": 10}
    assert _runs(recorded) == {("gen", "completed"): 1, ("caller", "completed"): 1}
    assert recorded.value(ITER, project_id="gen", agent_type="gen").sum == 3
    assert recorded.value(DUR, project_id="gen", agent_type="gen").count == 1
    assert recorded.value(QUAL, project_id="unknown", prompt_slug="s").count == 1
    assert _parent(recorded, "invoke_agent gen") is None  # started at top level
    for i in range(3):
        assert _parent(recorded, f"svc gen step {i}") == "invoke_agent gen"
    assert _parent(recorded, "svc caller call") == "invoke_agent caller"
    gen_span = _span(recorded, "invoke_agent gen")
    assert gen_span.attributes["paid.agent_run.status"] == "completed"
    assert gen_span.attributes["paid.agent_run.iterations"] == 3
    assert gen_span.attributes["gen_ai.usage.input_tokens"] == 6


def test_the_run_starts_at_the_first_step_under_the_callers_span(recorded: Recorded) -> None:
    g = steps(1)  # created outside any run ...
    with pt.agent_run(project_id="outer", agent_type="outer"):
        assert next(g) == 0  # ... first resumed inside one: that is its parent
    assert list(g) == []
    assert _parent(recorded, "invoke_agent gen") == "invoke_agent outer"
    assert _runs(recorded) == {("gen", "completed"): 1, ("outer", "completed"): 1}


def test_closing_an_abandoned_generator_inside_another_run_leaves_that_run_current(recorded: Recorded) -> None:
    g = steps(5)
    next(g)
    with pt.agent_run(project_id="other", agent_type="other") as other:
        g.close()
        assert pt.current_run() is other
        _tokens(7)
    assert _no_current()
    _tokens(1)
    assert _tokens_by_project(recorded) == {"gen": 1, "other": 7, "unknown": 1}
    assert _runs(recorded) == {("gen", "cancelled"): 1, ("other", "completed"): 1}
    assert recorded.value(ITER, project_id="gen", agent_type="gen").sum == 1
    assert _span(recorded, "invoke_agent gen").end_time is not None
    assert _parent(recorded, "invoke_agent gen") is None


def test_a_garbage_collected_generator_ends_its_run_as_cancelled(recorded: Recorded) -> None:
    g = steps(5)
    next(g)
    next(g)
    with pt.agent_run(project_id="other", agent_type="other") as other:
        del g
        gc.collect()
        assert pt.current_run() is other
    assert _runs(recorded) == {("gen", "cancelled"): 1, ("other", "completed"): 1}
    assert recorded.value(ITER, project_id="gen", agent_type="gen").sum == 2


def test_a_raising_generator_fails_its_run_and_the_error_is_the_callers(recorded: Recorded) -> None:
    boom = ValueError("agent bug")

    @pt.agent_run(project_id="bad", agent_type="bad")
    def bad() -> Iterator[int]:
        yield 1
        raise boom

    g = bad()
    next(g)
    with pytest.raises(ValueError) as info:
        next(g)
    assert info.value is boom
    assert _no_current()
    assert _runs(recorded) == {("bad", "failed"): 1}
    span = _span(recorded, "invoke_agent bad")
    assert span.status.status_code is trace.StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]


def test_send_throw_and_return_values_pass_through(recorded: Recorded) -> None:
    @pt.agent_run(project_id="echo", agent_type="echo")
    def echo() -> Iterator[Any]:
        total = 0
        while True:
            try:
                got = yield total
            except KeyError:
                got = 100  # handled: the generator goes on
            if got is None:
                return f"total {total}"
            total += got
            _tokens(got)

    @pt.agent_run(project_id="outer", agent_type="outer")
    def outer() -> Iterator[Any]:
        result = yield from echo()
        _tokens(1)
        yield result

    g = outer()
    assert next(g) == 0
    assert g.send(2) == 2
    assert g.throw(KeyError("x")) == 102
    assert g.send(None) == "total 102"
    assert list(g) == []
    assert _tokens_by_project(recorded) == {"echo": 102, "outer": 1}
    assert _runs(recorded) == {("echo", "completed"): 1, ("outer", "completed"): 1}
    assert _parent(recorded, "invoke_agent echo") == "invoke_agent outer"


def test_runs_opened_inside_a_generator_across_a_yield_stay_in_the_generator(recorded: Recorded) -> None:
    @pt.agent_run(project_id="gen", agent_type="gen")
    def nested() -> Iterator[int]:
        with pt.agent_run(project_id="inner", agent_type="inner"):
            yield 1
            _tokens(5)  # still the inner run after the caller's own run came and went
        _tokens(1)
        yield 2

    g = nested()
    next(g)
    assert _no_current()
    with pt.agent_run(project_id="caller", agent_type="caller"):
        _tokens(3)
    assert next(g) == 2
    assert _no_current()
    assert list(g) == []
    assert _tokens_by_project(recorded) == {"inner": 5, "gen": 1, "caller": 3}
    assert _parent(recorded, "invoke_agent inner") == "invoke_agent gen"
    assert _parent(recorded, "invoke_agent caller") is None


def test_workflow_and_external_call_generators_follow_the_same_rule(recorded: Recorded) -> None:
    @pt.workflow("report")
    def report() -> Iterator[int]:
        with pt.agent_run(project_id="wf", agent_type="wf"):
            pass
        yield 1
        yield 2

    @pt.external_call("github", "list")
    def pages() -> Iterator[int]:
        yield 1
        raise ConnectionError("reset")

    w, p = report(), pages()
    assert next(w) == 1 and next(p) == 1
    assert _no_current()
    with pt.agent_run(project_id="caller", agent_type="caller"):
        pass
    w.close()
    with pytest.raises(ConnectionError):
        next(p)
    assert _parent(recorded, "invoke_agent wf") == "workflow report"
    assert _parent(recorded, "invoke_agent caller") is None
    assert recorded.value("paid_workflow_completed", workflow_type="report", status="cancelled") == 1
    assert recorded.value("paid_workflow_duration", workflow_type="report").count == 1
    assert recorded.value("paid_external_api_requests", service="github", operation="list", outcome="error") == 1
    assert _span(recorded, "github list").status.status_code is trace.StatusCode.ERROR


# -- async generators ---------------------------------------------------------------------------
@pt.agent_run(project_id="agen", agent_type="agen")
async def ticks(n: int) -> AsyncIterator[int]:
    try:
        for i in range(n):
            run = pt.current_run()
            assert run is not None and run.project_id == "agen"
            run.iteration()
            await asyncio.sleep(0)
            _tokens(i + 1)
            yield i
    finally:
        _tokens(1000)  # clean-up code also records on its own run, however it is closed


async def test_async_generator_steps_and_exhaustion(recorded: Recorded) -> None:
    seen = []
    async for i in ticks(3):
        assert _no_current()
        _tokens(10)
        seen.append(i)
    assert seen == [0, 1, 2]
    assert _tokens_by_project(recorded) == {"agen": 1 + 2 + 3 + 1000, "unknown": 30}
    assert _runs(recorded) == {("agen", "completed"): 1}
    assert recorded.value(ITER, project_id="agen", agent_type="agen").sum == 3


async def test_break_out_of_async_for_does_not_leak_the_run(recorded: Recorded) -> None:
    async for _ in ticks(5):
        break
    assert _no_current()
    with pt.agent_run(project_id="next", agent_type="next"):
        pass
    pt.record_quality_score(0.25, prompt_slug="s")  # no project, no run: "unknown", not "agen"
    for _ in range(5):  # the dropped generator is closed by the loop's finaliser hook
        await asyncio.sleep(0)
    assert _parent(recorded, "invoke_agent next") is None
    assert recorded.points(QUAL).keys() == {(("project_id", "unknown"), ("prompt_slug", "s"))}
    assert _runs(recorded) == {("agen", "cancelled"): 1, ("next", "completed"): 1}
    assert _tokens_by_project(recorded) == {"agen": 1 + 1000}


async def test_aclose_inside_another_run(recorded: Recorded) -> None:
    g = ticks(5)
    assert await g.__anext__() == 0
    assert await g.__anext__() == 1
    async with pt.agent_run(project_id="other", agent_type="other") as other:
        await g.aclose()
        assert pt.current_run() is other
    assert _no_current()
    assert _runs(recorded) == {("agen", "cancelled"): 1, ("other", "completed"): 1}
    assert _tokens_by_project(recorded) == {"agen": 1 + 2 + 1000}
    assert recorded.value(ITER, project_id="agen", agent_type="agen").sum == 2
    assert recorded.value(DUR, project_id="agen", agent_type="agen").count == 1


async def test_async_asend_and_athrow_pass_through(recorded: Recorded) -> None:
    @pt.agent_run(project_id="echo", agent_type="echo")
    async def echo() -> AsyncIterator[Any]:
        total = 0
        while True:
            try:
                got = yield total
            except KeyError:
                got = 100
            await asyncio.sleep(0)
            total += got
            _tokens(got)

    g = echo()
    assert await g.asend(None) == 0
    assert await g.asend(2) == 2
    assert _no_current()
    assert await g.athrow(KeyError("x")) == 102
    with pytest.raises(ValueError):
        await g.athrow(ValueError("stop"))
    assert _tokens_by_project(recorded) == {"echo": 102}
    assert _runs(recorded) == {("echo", "failed"): 1}


async def test_task_cancelled_while_the_generator_awaits(recorded: Recorded) -> None:
    started = asyncio.Event()

    @pt.agent_run(project_id="slow", agent_type="slow")
    async def slow() -> AsyncIterator[int]:
        yield 0
        started.set()
        await asyncio.sleep(3600)
        yield 1

    async def consume() -> None:
        async for _ in slow():
            pass

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _runs(recorded) == {("slow", "cancelled"): 1}
    assert _span(recorded, "invoke_agent slow").attributes["paid.agent_run.status"] == "cancelled"


async def test_task_cancelled_while_the_generator_is_suspended_at_a_yield(recorded: Recorded) -> None:
    got_one = asyncio.Event()

    async def consume() -> None:
        async for _ in ticks(5):
            got_one.set()
            await asyncio.sleep(3600)  # the consumer waits; the generator sits at its yield

    task = asyncio.create_task(consume())
    await got_one.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(5):
        await asyncio.sleep(0)
    assert _no_current()
    assert _runs(recorded) == {("agen", "cancelled"): 1}
    assert _tokens_by_project(recorded) == {"agen": 1 + 1000}


def test_event_loop_shutdown_ends_a_suspended_async_generator(recorded: Recorded) -> None:
    kept: list[Any] = []

    async def main() -> None:
        g = ticks(5)
        kept.append(g)  # still referenced: only shutdown_asyncgens can close it
        assert await g.__anext__() == 0
        async with pt.agent_run(project_id="main", agent_type="main"):
            pass

    asyncio.run(main())
    assert _no_current()
    assert _runs(recorded) == {("agen", "cancelled"): 1, ("main", "completed"): 1}
    # its clean-up ran inside its own run (the loop closed the wrapper, not the inner generator)
    assert _tokens_by_project(recorded) == {"agen": 1 + 1000}


async def test_gathered_async_generators_keep_their_own_runs(recorded: Recorded) -> None:
    @pt.agent_run(agent_type="worker")
    async def worker(project_id: str, n: int) -> AsyncIterator[int]:
        for i in range(n):
            await asyncio.sleep(0)
            _tokens(1)
            yield i

    async def drain(project: str, n: int) -> None:
        async for _ in worker(project, n):
            await asyncio.sleep(0)
            run = pt.current_run()  # between steps: the caller's run, not the worker's
            assert run is not None and run.project_id == "parent"

    async with pt.agent_run(project_id="parent", agent_type="parent"):
        await asyncio.gather(*(drain(f"w{k}", k + 1) for k in range(5)))
    assert _tokens_by_project(recorded) == {f"w{k}": k + 1 for k in range(5)}
    assert {(p, s) for (p, s) in _runs(recorded)} == {(f"w{k}", "completed") for k in range(5)} | {
        ("parent", "completed")}
    assert all(s.parent is not None for s in recorded.spans() if s.name == "invoke_agent worker")


# -- property: interleaved steps of several generators and plain runs ------------------------------
_OPS = st.lists(
    st.tuples(st.sampled_from(["step", "step", "step", "close", "plain", "outer"]), st.integers(0, 3)),
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_OPS, kinds=st.lists(st.booleans(), min_size=4, max_size=4))
def test_interleaved_steps_record_on_the_run_whose_code_made_them(
    recorded: Recorded, ops: list[tuple[str, int]], kinds: list[bool],
) -> None:
    """Four generators (sync or async per ``kinds``), driven in a random order, with plain runs
    and an outer run of the caller opened and closed in between: every token lands on the run
    whose code recorded it, and every span has the parent whose code opened it."""
    recorded.exporter.clear()
    before = _tokens_by_project(recorded)
    expected: dict[str, float] = {}
    parents: dict[str, str | None] = {}  # span name -> expected parent span name
    statuses: dict[str, str] = {}

    def make(i: int, sync: bool) -> Any:
        project = f"g{i}"

        def body_step(k: int) -> None:
            run = pt.current_run()
            assert run is not None and run.project_id == project
            _tokens(1)
            with pt.external_call("step", f"{project}.{k}"):
                pass

        if sync:
            @pt.agent_run(project_id=project, agent_type=project)
            def gen() -> Iterator[int]:
                for k in range(3):
                    body_step(k)
                    yield k
            return gen()

        @pt.agent_run(project_id=project, agent_type=project)
        async def agen() -> AsyncIterator[int]:
            for k in range(3):
                await asyncio.sleep(0)
                body_step(k)
                yield k
        return agen()

    async def program() -> None:
        gens = [make(i, kinds[i]) for i in range(4)]
        done = [False] * 4
        steps_taken = [0] * 4
        outer: Any = None
        plain = 0
        for op, i in ops:
            caller = outer.project_id if outer is not None else None
            if op == "step" and not done[i]:
                try:
                    if kinds[i]:
                        next(gens[i])
                    else:
                        await gens[i].__anext__()
                except (StopIteration, StopAsyncIteration):
                    done[i] = True
                    statuses[f"g{i}"] = "completed"
                else:
                    if steps_taken[i] == 0:
                        parents[f"invoke_agent g{i}"] = f"invoke_agent {caller}" if caller else None
                    parents[f"step g{i}.{steps_taken[i]}"] = f"invoke_agent g{i}"
                    steps_taken[i] += 1
                    expected[f"g{i}"] = expected.get(f"g{i}", 0) + 1
            elif op == "close" and not done[i]:
                if kinds[i]:
                    gens[i].close()
                else:
                    await gens[i].aclose()
                done[i] = True
                if steps_taken[i]:
                    statuses[f"g{i}"] = "cancelled"
            elif op == "plain":
                plain += 1
                name = f"p{plain}"
                with pt.agent_run(project_id=name, agent_type=name):
                    _tokens(2)
                expected[name] = 2
                parents[f"invoke_agent {name}"] = f"invoke_agent {caller}" if caller else None
            elif op == "outer":
                if outer is None:
                    outer = pt.agent_run(project_id=f"o{i}-{plain}", agent_type=f"o{i}-{plain}")
                    outer.__enter__()
                else:
                    outer.__exit__(None, None, None)
                    outer = None
            # the caller's view after every operation: only its own outer run, if any
            current = pt.current_run()
            assert current is outer, (op, i)
            if outer is not None:
                _tokens(1)
                expected[outer.project_id] = expected.get(outer.project_id, 0) + 1
        if outer is not None:
            outer.__exit__(None, None, None)
        for i in range(4):
            if not done[i]:
                if kinds[i]:
                    gens[i].close()
                else:
                    await gens[i].aclose()
                if steps_taken[i]:
                    statuses[f"g{i}"] = "cancelled"

    asyncio.run(program())
    assert _no_current()
    after = _tokens_by_project(recorded)
    delta = {p: after[p] - before.get(p, 0) for p in after if after[p] != before.get(p, 0)}
    # plain runs reuse names across examples, generator projects too: compare this example's delta
    assert delta == {p: n for p, n in expected.items() if n}
    spans = {s.name: s for s in recorded.spans()}
    by_id = {s.context.span_id: s.name for s in recorded.spans()}
    for name, parent in parents.items():
        span = spans[name]
        got = by_id.get(span.parent.span_id) if span.parent is not None else None
        assert got == parent, (name, got, parent)
    for project, status in statuses.items():
        assert spans[f"invoke_agent {project}"].attributes["paid.agent_run.status"] == status
