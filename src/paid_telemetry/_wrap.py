"""One decorator mechanism for every scope object (agent runs, workflows, external calls).

A scope is a context manager usable with ``with`` and ``async with``; decorating a
function makes a fresh scope per call, for plain, async, generator and async-generator
functions alike, so the scope spans the whole iteration of a generator.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
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
    """Wrap ``func`` so each call runs inside ``make_scope(args, kwargs)``."""
    if inspect.isasyncgenfunction(func):

        @functools.wraps(func)
        async def agen_wrapper(*args: Any, **kwargs: Any) -> Any:
            with make_scope(args, kwargs):
                async for item in func(*args, **kwargs):
                    yield item

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
            with make_scope(args, kwargs):
                return (yield from func(*args, **kwargs))

        return gen_wrapper  # type: ignore[return-value]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with make_scope(args, kwargs):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


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
