"""Structured logs: JSON keys and values, trace/agent-run stamping, stdlib records, OTLP copies."""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import paid_telemetry as pt
from paid_telemetry import runtime
from paid_telemetry.logs import (
    add_temporal_context,
    add_trace_context,
    configure_logging,
    log_run_end,
    render_json,
)
from paid_telemetry_ops.services import free_port

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")


class Setup:
    def __init__(self, t: runtime.Telemetry, spans: InMemorySpanExporter, logs: InMemoryLogRecordExporter) -> None:
        self.t, self.spans, self.logs = t, spans, logs
        self.buf = io.StringIO()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.buf.getvalue().splitlines()]

    def span(self, name: str) -> Any:
        found = [s for s in self.spans.get_finished_spans() if s.name == name]
        assert len(found) == 1, [s.name for s in self.spans.get_finished_spans()]
        return found[0]


@pytest.fixture
def tel() -> Iterator[Setup]:
    spans, logs = InMemorySpanExporter(), InMemoryLogRecordExporter()
    t = pt.configure(
        exporter="none", handle_sigterm=False,
        span_processors=[SimpleSpanProcessor(spans)], log_processors=[SimpleLogRecordProcessor(logs)],
    )
    s = Setup(t, spans, logs)
    root = logging.getLogger()
    level = root.level
    configure_logging(stream=s.buf)
    yield s
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    for h in [h for h in root.handlers if getattr(h, "paid_telemetry", False)]:
        root.removeHandler(h)
    root.setLevel(level)
    pt.shutdown()


def ids(span: Any) -> tuple[str, str]:
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def assert_fresh(ts: str) -> None:
    assert TS.match(ts), ts
    when = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs(when.timestamp() - time.time()) < 5


# -- JSON lines -------------------------------------------------------------------------
def test_line_outside_any_span_has_exactly_the_record_keys(tel: Setup) -> None:
    structlog.get_logger().info("hello", count=3, ratio=0.5, ok=True, who="me")
    [line] = tel.lines()
    assert list(line)[:3] == ["timestamp", "level", "message"]
    assert_fresh(line.pop("timestamp"))
    assert line == {"level": "info", "message": "hello", "count": 3, "ratio": 0.5, "ok": True, "who": "me"}


def test_levels_and_minimum_level() -> None:
    buf = io.StringIO()
    try:
        configure_logging(stream=buf, level="warning", stdlib=False)
        log = structlog.get_logger()
        log.debug("d")
        log.info("i")
        log.warning("w")
        log.error("e")
        log.critical("c")
        lines = [json.loads(x) for x in buf.getvalue().splitlines()]
        assert [(x["level"], x["message"]) for x in lines] == [("warning", "w"), ("error", "e"), ("critical", "c")]
    finally:
        structlog.reset_defaults()


def test_trace_and_span_ids_are_those_of_the_current_span(tel: Setup) -> None:
    log = structlog.get_logger()
    with tel.t.tracer.start_as_current_span("outer"):
        log.info("in outer")
        with tel.t.tracer.start_as_current_span("inner"):
            log.info("in inner")
        log.info("back in outer")
    log.info("after")
    outer, inner = ids(tel.span("outer")), ids(tel.span("inner"))
    assert outer[0] == inner[0] and outer[1] != inner[1]
    got = [(x["message"], x.get("trace_id"), x.get("span_id")) for x in tel.lines()]
    assert got == [
        ("in outer", *outer),
        ("in inner", *inner),
        ("back in outer", *outer),
        ("after", None, None),
    ]
    for x in tel.lines()[:3]:
        assert HEX32.match(x["trace_id"]) and HEX16.match(x["span_id"])


def test_bound_context_is_merged(tel: Setup) -> None:
    structlog.contextvars.bind_contextvars(request_id="req-7")
    log = structlog.get_logger().bind(component="billing")
    log.info("charged", cents=120)
    [line] = tel.lines()
    del line["timestamp"]
    assert line == {"level": "info", "message": "charged", "request_id": "req-7", "component": "billing", "cents": 120}


def test_exception_is_rendered_as_a_traceback_string(tel: Setup) -> None:
    try:
        raise ZeroDivisionError("nope")
    except ZeroDivisionError:
        structlog.get_logger().exception("failed")
    [line] = tel.lines()
    assert line["level"] == "error" and line["message"] == "failed"
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert line["exception"].endswith("ZeroDivisionError: nope")


def test_console_output_is_one_option_away() -> None:
    buf = io.StringIO()
    try:
        configure_logging(stream=buf, json=False, stdlib=False)
        structlog.get_logger().info("hello there", n=1)
        out = buf.getvalue()
        assert "hello there" in out and "n=1" in out and "[info" in out
        with pytest.raises(json.JSONDecodeError):
            json.loads(out)
    finally:
        structlog.reset_defaults()


# -- agent runs -------------------------------------------------------------------------
def test_lines_inside_an_agent_run_carry_its_id_and_project(tel: Setup) -> None:
    log = structlog.get_logger()
    with pt.agent_run(project_id=45, agent_type="coder") as run:
        log.info("thinking")
    log.info("outside")
    trace_id, span_id = ids(tel.span("invoke_agent coder"))
    inside, outside = [x for x in tel.lines() if x["message"] != "Agent run completed"]  # (written by the hook)
    del inside["timestamp"], outside["timestamp"]
    assert inside == {
        "level": "info", "message": "thinking", "trace_id": trace_id, "span_id": span_id,
        "agent_run_id": run.run_id, "project_id": 45,
    }
    assert outside == {"level": "info", "message": "outside"}


@pytest.mark.parametrize(("status", "level"), [("completed", "info"), ("failed", "error"), ("cancelled", "warning")])
def test_log_run_end_writes_the_record_line(tel: Setup, status: str, level: str) -> None:
    with pt.agent_run(project_id="proj-a", agent_type="reviewer") as run:
        run.iteration(3)
    seen, exported = len(tel.lines()), len(tel.logs.get_finished_logs())  # the agents.py hook may have written one
    log_run_end(run, 342.25, status)  # after the run is detached: ids still come from its span
    trace_id, span_id = ids(tel.span("invoke_agent reviewer"))
    [line] = tel.lines()[seen:]
    assert_fresh(line.pop("timestamp"))
    assert line == {
        "level": level, "message": "Agent run completed", "agent_run_id": run.run_id, "project_id": "proj-a",
        "agent_type": "reviewer", "duration_seconds": 342.25, "status": status, "iterations": 3,
        "trace_id": trace_id, "span_id": span_id,
    }
    [rec] = [r.log_record for r in tel.logs.get_finished_logs()[exported:]]
    assert rec.body == "Agent run completed"
    assert (format(rec.trace_id, "032x"), format(rec.span_id, "016x")) == (trace_id, span_id)


def test_log_run_end_never_raises(tel: Setup) -> None:
    log_run_end(object(), "not a number", "completed")  # type: ignore[arg-type]
    log_run_end(None, 1.0, "failed")
    assert tel.lines() == []


def test_agent_run_exit_writes_the_completed_line(tel: Setup) -> None:
    with pytest.raises(RuntimeError), pt.agent_run(project_id=7, agent_type="coder") as run:
        raise RuntimeError("boom")
    [line] = [x for x in tel.lines() if x["message"] == "Agent run completed"]
    assert line["status"] == "failed" and line["level"] == "error"
    assert line["agent_run_id"] == run.run_id and line["project_id"] == 7
    assert 0 <= line["duration_seconds"] < 5
    assert (line["trace_id"], line["span_id"]) == ids(tel.span("invoke_agent coder"))


# -- standard library -------------------------------------------------------------------
def test_stdlib_records_are_rendered_the_same_way_with_trace_fields(tel: Setup) -> None:
    lib = logging.getLogger("thirdparty.client")
    with tel.t.tracer.start_as_current_span("call"), pt.agent_run(project_id=9, agent_type="a") as run:
        lib.warning("retrying %s of %d", "GET", 3, extra={"attempt": 2})
        lib.debug("below the level: not written")
    trace_id, span_id = ids(tel.span("invoke_agent a"))
    [line] = [x for x in tel.lines() if x.get("logger") == "thirdparty.client"]
    assert_fresh(line.pop("timestamp"))
    assert line == {
        "level": "warning", "message": "retrying GET of 3", "trace_id": trace_id, "span_id": span_id,
        "agent_run_id": run.run_id, "project_id": 9, "logger": "thirdparty.client", "attempt": 2,
    }
    assert all(list(x)[:3] == ["timestamp", "level", "message"] for x in tel.lines())


def test_stdlib_exception_and_reconfigure_does_not_duplicate(tel: Setup) -> None:
    configure_logging(stream=tel.buf)  # again: replaces our root handler
    try:
        {}["k"]
    except KeyError:
        logging.getLogger("lib").exception("lookup failed")
    [line] = tel.lines()
    assert line["level"] == "error" and line["logger"] == "lib"
    assert line["exception"].splitlines()[-1] == "KeyError: 'k'"
    assert sum(getattr(h, "paid_telemetry", False) for h in logging.getLogger().handlers) == 1


# -- bad input --------------------------------------------------------------------------
class Unrepresentable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_non_serialisable_values_are_rendered_not_raised(tel: Setup) -> None:
    log = structlog.get_logger()
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    log.info("odd", s={1}, b=b"\x00", nan=float("nan"), obj=Unrepresentable())
    log.info("keys", d={(1, 2): "tuple key"})
    log.info("cycle", c=cyclic)
    odd, keys, cycle = tel.lines()
    assert (odd["s"], odd["b"], odd["nan"]) == ("{1}", "b'\\x00'", "nan")
    assert odd["obj"] == "<unrepresentable Unrepresentable>"
    assert keys["d"] == "{(1, 2): 'tuple key'}"
    assert cycle["c"] == "[1, [...]]"
    assert [r.log_record.body for r in tel.logs.get_finished_logs()] == ["odd", "keys", "cycle"]


def test_render_json_never_raises_on_odd_keys() -> None:
    out = render_json(None, "info", {"event": "x", (1, 2): "v", "inf": float("inf")})
    assert json.loads(out) == {"event": "x", "(1, 2)": "v", "inf": "inf"}


# -- the processors in anyone's chain ---------------------------------------------------
def test_add_trace_context_in_a_custom_chain(tel: Setup) -> None:
    buf = io.StringIO()
    structlog.configure(
        processors=[add_trace_context, structlog.processors.JSONRenderer()],
        logger_factory=structlog.WriteLoggerFactory(file=buf),
    )
    with tel.t.tracer.start_as_current_span("mine"):
        structlog.get_logger().info("custom")
        explicit = add_trace_context(None, "info", {"trace_id": "given"})
    trace_id, span_id = ids(tel.span("mine"))
    assert json.loads(buf.getvalue()) == {"event": "custom", "trace_id": trace_id, "span_id": span_id}
    assert explicit == {"trace_id": "given", "span_id": span_id}
    assert add_trace_context(None, "info", {"event": "no span"}) == {"event": "no span"}


def test_temporal_processor_outside_temporal_adds_nothing() -> None:
    import temporalio.activity
    import temporalio.workflow

    assert temporalio.activity.in_activity() is False and temporalio.workflow.in_workflow() is False

    assert add_temporal_context(None, "info", {"event": "x"}) == {"event": "x"}


# -- OTLP -------------------------------------------------------------------------------
def test_otel_log_records_carry_the_span_ids_natively(tel: Setup) -> None:
    log = structlog.get_logger()
    with tel.t.tracer.start_as_current_span("work"):
        log.warning("slow", ms=1200, obj=object(), big=2**70, tags=["a"])
        logging.getLogger("thirdparty").error("lib error")
        logging.getLogger("opentelemetry.exporter").warning("export failed")  # stdout only, never re-exported
    log.info("no span")
    trace_id, span_id = tel.span("work").context.trace_id, tel.span("work").context.span_id
    recs = [r for r in tel.logs.get_finished_logs()]
    assert [r.log_record.body for r in recs] == ["slow", "lib error", "no span"]
    slow, lib, nospan = (r.log_record for r in recs)
    assert (slow.trace_id, slow.span_id) == (trace_id, span_id)
    assert (lib.trace_id, lib.span_id) == (trace_id, span_id)
    assert not nospan.trace_id and not nospan.span_id
    assert (slow.severity_text, slow.severity_number.value) == ("WARN", 13)
    assert (lib.severity_text, lib.severity_number.value) == ("ERROR", 17)
    attrs = dict(slow.attributes or {})
    assert attrs["ms"] == 1200 and attrs["big"] == str(2**70) and attrs["tags"] == "['a']"
    assert attrs["obj"].startswith("<object object at 0x")
    assert set(attrs) == {"ms", "obj", "big", "tags"}
    assert dict(lib.attributes or {}) == {"logger": "thirdparty"}
    assert [r.instrumentation_scope.name for r in recs] == ["paid_telemetry", "thirdparty", "paid_telemetry"]
    assert [x["message"] for x in tel.lines()] == ["slow", "lib error", "export failed", "no span"]


def test_otel_false_exports_nothing(tel: Setup) -> None:
    configure_logging(stream=tel.buf, otel=False)
    structlog.get_logger().info("stdout only")
    assert tel.logs.get_finished_logs() == ()
    assert [x["message"] for x in tel.lines()] == ["stdout only"]


def test_stdout_keeps_working_when_the_collector_is_away() -> None:
    """otlp mode with nothing listening: lines are written at full speed, nothing raises."""
    port = free_port()
    t = pt.configure(
        exporter="otlp", otlp_endpoint=f"http://127.0.0.1:{port}", export_timeout_s=1, handle_sigterm=False
    )
    buf = io.StringIO()
    try:
        assert t.logger_provider is not None
        configure_logging(stream=buf, stdlib=False)
        log = structlog.get_logger()
        start = time.perf_counter()
        with t.tracer.start_as_current_span("offline"):
            for i in range(2000):
                log.info("line", i=i)
        elapsed = time.perf_counter() - start
        lines = [json.loads(x) for x in buf.getvalue().splitlines()]
        assert [x["i"] for x in lines] == list(range(2000))
        assert elapsed < 2.0, f"{elapsed:.2f}s for 2000 lines: the OTLP path blocked"
    finally:
        structlog.reset_defaults()
        pt.shutdown(timeout_s=2)


# -- output streams ---------------------------------------------------------------------
def test_default_stream_is_stdout_at_write_time(tel: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging()
    structlog.get_logger().info("to stdout")
    logging.getLogger("lib").warning("lib to stdout")
    out = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(x["message"], x["level"]) for x in out] == [("to stdout", "info"), ("lib to stdout", "warning")]


def test_a_closed_stream_loses_lines_but_never_raises(tel: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    closed = io.StringIO()
    configure_logging(stream=closed)
    closed.close()
    structlog.get_logger().info("lost")
    logging.getLogger("lib").error("lost too")
    assert capsys.readouterr().err == ""  # not even logging's "--- Logging error ---" report


def test_console_renderer_falls_back_to_json_for_unrenderable_values() -> None:
    buf = io.StringIO()
    try:
        configure_logging(stream=buf, json=False, stdlib=False)
        structlog.get_logger().info("odd", obj=Unrepresentable())
        line = json.loads(buf.getvalue())
        assert (line["message"], line["obj"]) == ("odd", "<unrepresentable Unrepresentable>")
    finally:
        structlog.reset_defaults()
