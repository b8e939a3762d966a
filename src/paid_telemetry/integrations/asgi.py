"""HTTP server telemetry for Paid's API: one call instruments an ASGI app.

Wraps ``opentelemetry-instrumentation-asgi`` (the ``asgi`` extra) with Paid's choices:

- request duration follows the *stable* HTTP semantic conventions
  (``http.server.request.duration``, seconds; Prometheus: ``http_server_request_duration_seconds``),
  whatever ``OTEL_SEMCONV_STABILITY_OPT_IN`` says (``http/dup`` is honoured: old metrics as well);
- ``http.route`` is the route *template* (``/projects/{project_id}/runs``), resolved from the
  app's routes before the request runs, so metric labels never carry ids; the span is named
  ``GET /projects/{project_id}/runs``. The raw path stays on the span (``url.path``), where ids belong;
- ``/metrics`` and health endpoints are excluded (exact paths): no span, no metric point;
- spans and metrics go to the providers of :func:`paid_telemetry.configure` (the globals in no-op mode),
  re-bound when ``configure()`` is called again;
- instrumentation already present is never doubled (one server span, one duration point per request):
  an app already instrumented by opentelemetry-instrumentation-asgi/-fastapi (``FastAPIInstrumentor``,
  ``opentelemetry-instrument``) is returned unchanged; FastAPI's own telemetry (FastAPI >= 0.165) does the
  work when it records to the same providers as ours, else ours does and FastAPI's is switched off
  for each request. Either way the excluded paths are excluded.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from typing import Any, Literal

from paid_telemetry import runtime

__all__ = [
    "DEFAULT_EXCLUDED_PATHS",
    "PaidASGIMiddleware",
    "already_instrumented",
    "instrument_app",
    "starlette_route_resolver",
]

log = logging.getLogger("paid_telemetry")

Scope = MutableMapping[str, Any]
RouteResolver = Callable[[Scope], str | None]
SpanKind = Literal["receive", "send"]

DEFAULT_EXCLUDED_PATHS: tuple[str, ...] = ("/metrics", "/health", "/healthz", "/readyz", "/livez")
INSTALL_HINT = "pip install 'paid-telemetry[asgi]'"
_MAX_DEPTH = 16


def instrument_app(
    app: Any,
    *,
    excluded_paths: Iterable[str] = DEFAULT_EXCLUDED_PATHS,
    route_resolver: RouteResolver | None = None,
    exclude_spans: Sequence[SpanKind] = ("receive", "send"),
    server_request_hook: Callable[[Any, Scope], None] | None = None,
    tracer_provider: Any = None,
    meter_provider: Any = None,
) -> Any:
    """Return ``app`` wrapped so every HTTP request gets a server span and a duration point.

    ``excluded_paths`` are exact paths (a trailing ``/`` is ignored) that are neither traced nor
    measured. ``route_resolver(scope) -> template | None`` gives ``http.route``; the default
    reads the routes of a Starlette/FastAPI app (found through wrapping middleware). Without
    a template, ``http.route`` is left out rather than filled with the raw path.
    ``exclude_spans`` drops the per-message ``receive``/``send`` child spans (noise for an API).
    Explicit providers override the ones from ``configure()``.

    Raises ImportError (with the install command) when the ``asgi`` extra is missing.
    """
    try:
        import opentelemetry.instrumentation.asgi  # noqa: F401
    except ImportError as exc:  # pragma: no cover - the extra is installed in dev
        raise ImportError(f"paid_telemetry.asgi needs opentelemetry-instrumentation-asgi: {INSTALL_HINT}") from exc
    if isinstance(app, PaidASGIMiddleware):
        return app
    existing = already_instrumented(app)
    if existing is not None:
        log.info("paid-telemetry: the ASGI app is already instrumented by %s; instrument_app leaves it as it is "
                 "(one server span and one duration metric per request)", existing)
        return app
    return PaidASGIMiddleware(
        app,
        excluded_paths=excluded_paths,
        route_resolver=route_resolver if route_resolver is not None else starlette_route_resolver(app),
        exclude_spans=exclude_spans,
        server_request_hook=server_request_hook,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )


class PaidASGIMiddleware:
    """The ASGI app :func:`instrument_app` returns; excluded paths bypass OpenTelemetry entirely."""

    def __init__(
        self,
        app: Any,
        *,
        excluded_paths: Iterable[str],
        route_resolver: RouteResolver | None,
        exclude_spans: Sequence[SpanKind],
        server_request_hook: Callable[[Any, Scope], None] | None,
        tracer_provider: Any,
        meter_provider: Any,
    ) -> None:
        self.app = app
        self.excluded_paths = frozenset(_normalise(p) for p in excluded_paths)
        self.route_resolver = route_resolver
        self._exclude_spans: list[SpanKind] = [s for s in exclude_spans if s in ("receive", "send")]
        self._hook = server_request_hook
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._otel: Any = None
        self._bound: Any = None
        self._fastapi = _native_fastapi(app)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        excluded = self._excluded(scope)
        if self._fastapi is not None:
            if not excluded and self._fastapi_instruments():
                await self.app(scope, receive, send)  # FastAPI's own telemetry: one layer
                return
            scope[_FASTAPI_SCOPE_KEY] = None  # FastAPI's own skip marker: its telemetry stays off for this request
        if excluded:
            await self.app(scope, receive, send)
            return
        try:
            otel = self._middleware()
        except Exception as exc:  # instrumentation must never break the API
            log.warning("paid-telemetry: ASGI instrumentation unavailable: %r", exc)
            await self.app(scope, receive, send)
            return
        await otel(scope, receive, send)

    def _excluded(self, scope: Scope) -> bool:
        path = scope.get("path") or "/"
        if _normalise(path) in self.excluded_paths:
            return True
        root = scope.get("root_path") or ""
        return bool(root) and path.startswith(root) and _normalise(path[len(root):] or "/") in self.excluded_paths

    def _middleware(self) -> Any:
        """The OpenTelemetry middleware bound to the current ``configure()`` handle (rebuilt when it changes)."""
        handle = runtime.current()
        if self._otel is None or handle is not self._bound:
            self._otel = self._build(handle)
            self._bound = handle
        return self._otel

    def _providers(self, handle: runtime.Telemetry) -> tuple[Any, Any]:
        """The tracer and meter providers our layer uses (None: the globals)."""
        tp = self._tracer_provider or (None if handle.noop else handle.tracer_provider)
        mp = self._meter_provider or (None if handle.noop else handle.meter_provider)
        return tp, mp

    def _fastapi_instruments(self) -> bool:
        """True when FastAPI's own telemetry records this request's span and duration to our providers."""
        try:
            from opentelemetry import metrics, trace

            app = self._fastapi
            config = app._telemetry
            if not (config.get("tracing") and config.get("metrics") and app._native_telemetry.enabled()):
                return False
            tp, mp = self._providers(runtime.current())
            return bool(
                _resolved(config.get("tracer_provider") or trace.get_tracer_provider())
                is _resolved(tp or trace.get_tracer_provider())
                and _resolved(config.get("meter_provider") or metrics.get_meter_provider())
                is _resolved(mp or metrics.get_meter_provider())
            )
        except Exception as exc:  # FastAPI internals moved: ours does the work, FastAPI's is switched off
            log.debug("paid-telemetry: cannot read FastAPI's telemetry settings: %r", exc)
            return False

    def _build(self, handle: runtime.Telemetry) -> Any:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        tp, mp = self._providers(handle)
        with _stable_http_semconv():
            otel = OpenTelemetryMiddleware(
                self.app,
                default_span_details=self._span_details,
                server_request_hook=self._hook,
                tracer_provider=tp,
                meter_provider=mp,
                exclude_spans=self._exclude_spans or None,
            )
        if getattr(otel, "duration_histogram_new", None) is None:
            log.warning("paid-telemetry: could not select stable HTTP semantic conventions; "
                        "set OTEL_SEMCONV_STABILITY_OPT_IN=http")
        return otel

    def _span_details(self, scope: Scope) -> tuple[str, dict[str, str]]:
        """Span name ``METHOD template`` and the ``http.route`` attribute (kept on the duration metric)."""
        route = self._route(scope)
        if scope.get("type") == "websocket":
            return (route or "websocket"), ({"http.route": route} if route else {})
        method = _method(scope)
        if route:
            return f"{method} {route}", {"http.route": route}
        return method, {}

    def _route(self, scope: Scope) -> str | None:
        if self.route_resolver is None:
            return None
        try:
            route = self.route_resolver(scope)
        except Exception as exc:  # a resolver bug must not fail the request
            log.debug("paid-telemetry: route resolver failed: %r", exc)
            return None
        return route if isinstance(route, str) and route else None


_FASTAPI_SCOPE_KEY = "fastapi.telemetry"  # FastAPI skips its own telemetry when the key is in the scope
_OTEL_ASGI = ("opentelemetry.instrumentation.asgi", "OpenTelemetryMiddleware")


def _chain(app: Any) -> Iterator[Any]:
    """``app`` and the apps it wraps (``.app``), outermost first."""
    seen: set[int] = set()
    for _ in range(_MAX_DEPTH):
        if app is None or id(app) in seen:
            return
        seen.add(id(app))
        yield app
        app = getattr(app, "app", None)


def _is_otel_asgi(obj: Any) -> bool:
    cls = obj if isinstance(obj, type) else type(obj)
    return any((c.__module__, c.__name__) == _OTEL_ASGI for c in getattr(cls, "__mro__", ()))


def already_instrumented(app: Any) -> str | None:
    """What already instruments ``app`` with OpenTelemetry's ASGI middleware, else None.

    Finds ``OpenTelemetryMiddleware`` wrapping the app or in a Starlette/FastAPI app's middleware
    list, and apps instrumented by ``FastAPIInstrumentor``/``StarletteInstrumentor`` (which is
    what ``opentelemetry-instrument`` does to every FastAPI app it sees created).
    FastAPI's own telemetry is not counted here: :class:`PaidASGIMiddleware` coordinates with it.
    """
    for obj in _chain(app):
        if _is_otel_asgi(obj):
            return "opentelemetry-instrumentation-asgi (OpenTelemetryMiddleware)"
        if getattr(obj, "_is_instrumented_by_opentelemetry", False) is True:
            return f"opentelemetry-instrumentation ({type(obj).__name__}: FastAPIInstrumentor, " \
                   "StarletteInstrumentor or opentelemetry-instrument)"
        for mw in getattr(obj, "user_middleware", None) or ():
            if _is_otel_asgi(getattr(mw, "cls", None)):
                return "opentelemetry-instrumentation-asgi (OpenTelemetryMiddleware in the app's middleware)"
    return None


def _native_fastapi(app: Any) -> Any:
    """The FastAPI app (>= 0.165, with its own telemetry) inside ``app``, else None."""
    for obj in _chain(app):
        if hasattr(obj, "_native_telemetry") and isinstance(getattr(obj, "_telemetry", None), dict):
            return obj
    return None


def _resolved(provider: Any) -> Any:
    """The provider behind paid-telemetry's global delegates (which follow configure()), else itself."""
    from paid_telemetry.export.switch import SwitchableMeterProvider, SwitchableTracerProvider

    if isinstance(provider, SwitchableMeterProvider | SwitchableTracerProvider):
        return provider.target
    return provider


def starlette_route_resolver(app: Any) -> RouteResolver | None:
    """A resolver for Starlette/FastAPI apps (also behind wrapping middleware), else None.

    It replays the router's matching on the request scope (read-only) and joins the templates
    of the matched ``Mount``s and ``Route``: ``Mount("/orgs/{org_id}")`` + ``Route("/members/{member_id}")``
    gives ``/orgs/{org_id}/members/{member_id}``. A method mismatch (405) still names the route.
    """
    target = app
    for _ in range(_MAX_DEPTH):
        if hasattr(target, "routes"):
            break
        target = getattr(target, "app", None)
        if target is None:
            return None
    else:
        return None
    try:
        from starlette.routing import Host, Match, Mount
    except ImportError:
        return None
    owner = target

    def match(routes: Sequence[Any], scope: Scope, prefix: str, depth: int) -> str | None:
        partial: Any = None
        for route in routes:
            found, child = route.matches(scope)
            if found is Match.FULL:
                if isinstance(route, Mount):
                    inner = route.routes
                    if not inner or depth >= _MAX_DEPTH:  # e.g. StaticFiles: "/static/{path}"
                        return prefix + route.path_format
                    mount_prefix = route.path_format.removesuffix("/{path}")
                    return match(inner, {**scope, **child}, prefix + mount_prefix, depth + 1)
                if isinstance(route, Host):
                    return match(route.routes, {**scope, **child}, prefix, depth + 1) if depth < _MAX_DEPTH else None
                fmt = getattr(route, "path_format", None)
                return prefix + fmt if fmt else None
            if found is Match.PARTIAL and partial is None:
                partial = route
        fmt = getattr(partial, "path_format", None)
        return prefix + fmt if fmt else None

    def resolve(scope: Scope) -> str | None:
        return match(owner.routes, scope, "", 0)

    return resolve


@contextlib.contextmanager
def _stable_http_semconv() -> Iterator[None]:
    """Make the ASGI middleware built inside this block use the stable HTTP conventions.

    opentelemetry-instrumentation reads ``OTEL_SEMCONV_STABILITY_OPT_IN`` once per process into a
    class-level mapping, and each middleware copies the mode at construction. We switch the HTTP
    entry to ``http`` (unless it is already ``http``/``http/dup``) only while constructing ours,
    so other instrumentations in the process keep what the environment chose.
    """
    try:
        from opentelemetry.instrumentation import _semconv as sc

        stability = sc._OpenTelemetrySemanticConventionStability
        stability._initialize()  # type: ignore[no-untyped-call]
        mapping = stability._OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING
        key = sc._OpenTelemetryStabilitySignalType.HTTP
        before = mapping.get(key, sc._StabilityMode.DEFAULT)
        stable = (sc._StabilityMode.HTTP, sc._StabilityMode.HTTP_DUP)
    except (ImportError, AttributeError):  # internals moved: the warning in _build tells the operator
        yield
        return
    if before in stable:
        yield
        return
    mapping[key] = sc._StabilityMode.HTTP
    try:
        yield
    finally:
        mapping[key] = before


def _normalise(path: str) -> str:
    return path.rstrip("/") or "/"


def _method(scope: Scope) -> str:
    from opentelemetry.util.http import sanitize_method

    method = sanitize_method(str(scope.get("method", "")).strip()) or "HTTP"
    return "HTTP" if method == "_OTHER" else method
