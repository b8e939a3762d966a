"""One decorator mechanism for every scope object (agent runs, workflows, external calls).

A scope is a context manager usable with ``with`` and ``async with``; decorating a
function makes a fresh scope per call, for plain, async, generator and async-generator
functions alike. A generator's scope spans its whole iteration (from its first step until it
is exhausted, raises, or is closed or garbage-collected) but is current only while the
generator's own code runs.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def exit_status(exc: BaseException | None) -> str:
    """completed, failed or cancelled, from how a scope ended."""
    if exc is None:
        return "completed"
    if isinstance(exc, GeneratorExit | KeyboardInterrupt) or type(exc).__name__ == "CancelledError":
        return "cancelled"
    return "failed"


def decorate(func: F, make_scope: Callable[[tuple[Any, ...], dict[str, Any]], Any]) -> F:
    """Wrap ``func`` so each call runs inside ``make_scope(args, kwargs)``.

    Generators are driven step by step (see the note below): their scope is current only
    while their own code runs, never in the caller between two steps.
    """
    if inspect.isasyncgenfunction(func):

        @functools.wraps(func)
        async def agen_wrapper(*args: Any, **kwargs: Any) -> Any:
            agen = func(*args, **kwargs)
            ctx = contextvars.copy_context()
            scope = make_scope(args, kwargs)
            ctx.run(scope.__enter__)
            try:
                value = await _InContext(ctx, _first_asend(agen))
                while True:
                    try:
                        sent = yield value
                    except GeneratorExit:
                        await _InContext(ctx, agen.aclose())
                        raise
                    except BaseException as exc:
                        value = await _InContext(ctx, agen.athrow(exc))
                    else:
                        value = await _InContext(ctx, agen.asend(sent))
            except StopAsyncIteration:
                ctx.run(scope.__exit__, None, None, None)
            except BaseException as exc:
                ctx.run(scope.__exit__, type(exc), exc, exc.__traceback__)
                raise

        return agen_wrapper  # type: ignore[return-value]
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            with make_scope(args, kwargs):
                return await func(*args, **kwargs)

        return async_wrapper  # type: ignore[return-value]
    if inspect.isgeneratorfunction(func):

        @functools.wraps(func)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
            gen = func(*args, **kwargs)
            ctx = contextvars.copy_context()
            scope = make_scope(args, kwargs)
            ctx.run(scope.__enter__)
            try:
                value = ctx.run(gen.send, None)
                while True:
                    try:
                        sent = yield value
                    except GeneratorExit:
                        ctx.run(gen.close)
                        raise
                    except BaseException as exc:
                        value = ctx.run(gen.throw, exc)
                    else:
                        value = ctx.run(gen.send, sent)
            except StopIteration as stop:
                ctx.run(scope.__exit__, None, None, None)
                return stop.value
            except BaseException as exc:
                ctx.run(scope.__exit__, type(exc), exc, exc.__traceback__)
                raise

        return gen_wrapper  # type: ignore[return-value]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with make_scope(args, kwargs):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


# -- generators ---------------------------------------------------------------------------
# A ``with scope:`` around ``yield from`` would leave the scope's context variables (current
# run, current span) set in the *caller's* context whenever the generator is suspended, and
# would reset them from whatever context happens to close or finalise it. Instead the
# generator runs in its own copy of the context, taken at its first step (as an asyncio task
# does): the scope is entered there, each resume runs inside it with ``Context.run``, and the
# scope ends there when the generator returns, raises, or is closed or finalised (a wrapper
# generator's close() runs on garbage collection; an async one's aclose() runs through the
# event loop's async-generator hooks, including ``shutdown_asyncgens``).


class _InContext:
    """Await ``awaitable`` with each of its steps run inside ``ctx``."""

    __slots__ = ("_ctx", "_it")

    def __init__(self, ctx: contextvars.Context, awaitable: Awaitable[Any]) -> None:
        self._ctx = ctx
        self._it: Any = awaitable.__await__()

    def __await__(self) -> _InContext:
        return self

    def __iter__(self) -> _InContext:
        return self

    def __next__(self) -> Any:
        return self._ctx.run(self._it.send, None)

    def send(self, value: Any) -> Any:
        return self._ctx.run(self._it.send, value)

    def throw(self, *args: Any) -> Any:
        return self._ctx.run(self._it.throw, *args)

    def close(self) -> None:
        self._ctx.run(self._it.close)


def _first_asend(agen: AsyncGenerator[Any, Any]) -> Awaitable[Any]:
    """``agen.asend(None)`` without registering ``agen`` with the event loop's async-generator hooks.

    Only the wrapper is registered: otherwise ``loop.shutdown_asyncgens()`` could close the inner
    generator directly, outside its context and before the wrapper ends its scope.
    """
    hooks = sys.get_asyncgen_hooks()
    sys.set_asyncgen_hooks(firstiter=None, finalizer=None)
    try:
        return agen.asend(None)
    finally:
        sys.set_asyncgen_hooks(*hooks)


def argument_getter(func: Callable[..., Any], name: str) -> Callable[[tuple[Any, ...], dict[str, Any]], Any] | None:
    """A fast reader of the argument called ``name`` (or None if ``func`` has none)."""
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return None
    for index, param in enumerate(params):
        if param.name != name:
            continue
        default = param.default if param.default is not inspect.Parameter.empty else None
        positional = param.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)

        def get(
            args: tuple[Any, ...], kwargs: dict[str, Any],
            index: int = index, positional: bool = positional, default: Any = default,
        ) -> Any:
            if name in kwargs:
                return kwargs[name]
            if positional and index < len(args):
                return args[index]
            return default

        return get
    return None
