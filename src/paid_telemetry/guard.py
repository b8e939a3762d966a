"""Input hygiene: instrumentation never raises into agent code, and labels stay bounded.

Bad values are dropped or sanitised, counted in ``paid_telemetry_dropped_records_total``
and warned about once per (instrument, reason). ``strict=True`` raises instead, for tests.
"""

from __future__ import annotations

import logging
import math
import numbers
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from paid_telemetry.catalogue import Instrument

log = logging.getLogger("paid_telemetry")

UNKNOWN = "unknown"
OTHER = "other"
OVERFLOW = "_overflow"
_SURROGATES = re.compile("[\ud800-\udfff]")
MAX_COUNT = 1e12  # one call never legitimately records more tokens, cents or seconds than this
# What an amount may be: a real number (int, float, Fraction, numpy integer/floating scalars, which
# register as numbers.Real) or a Decimal, never a bool. Strings, bytes and np.bool_ are wrong_type.
_NUMBERS = (numbers.Real, Decimal)


def safe_text(value: Any) -> str:
    """str() that never raises: a broken ``__str__`` must not lose a record."""
    if type(value) is str:
        return value
    try:
        return str(value)
    except Exception:
        return UNKNOWN


MAX_SPAN_NAME = 256  # characters of a span name we build from caller values
MAX_ATTRIBUTE_LENGTH = 4096  # characters of a span attribute (also the TracerProvider's SpanLimits)


def span_text(value: Any, limit: int = MAX_ATTRIBUTE_LENGTH) -> str:
    """``safe_text`` cut to ``limit`` characters, for span names and attributes."""
    text = safe_text(value)
    return text if len(text) <= limit else text[:limit]


def describe(value: Any, limit: int = 80) -> str:
    """A short repr for a warning that never raises (nor renders a 5000-digit int)."""
    if type(value) is int and value.bit_length() > 64:
        return f"int of {value.bit_length()} bits"
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


class TelemetryInputError(ValueError):
    """Raised for bad input only when paid-telemetry runs with ``strict=True``."""


def surface(err: TelemetryInputError, exc: BaseException | None) -> None:
    """Raise a strict-mode error found while a scope ended, unless the scope ended with the
    caller's own exception ``exc``: that one always wins, and ours becomes a note on it."""
    if exc is None:
        raise err
    try:
        exc.add_note(f"paid-telemetry (strict mode): {err}")
    except Exception:
        pass


class Guard:
    """Counts and reports rejected input; the single place that decides raise-or-swallow."""

    def __init__(self, *, strict: bool, max_label_length: int, cardinality_limit: int) -> None:
        self.strict = strict
        self.max_label_length = max_label_length
        self.cardinality_limit = cardinality_limit
        self._warned: set[tuple[str, str]] = set()
        self.reports = 0  # total reports; lets callers see whether a step reported anything
        self._attrs: dict[tuple[str, str], dict[str, str]] = {}
        self._add: Callable[[int, Mapping[str, str]], None] = lambda n, a: None

    def bind(self, add: Callable[[int, Mapping[str, str]], None]) -> None:
        """Connect the self-metric counter (created after the guard)."""
        self._add = add

    def report(self, instrument: str, reason: str, detail: str, *, may_raise: bool = True) -> None:
        """Count one rejected input; warn the first time; raise in strict mode."""
        self.reports += 1
        key = (instrument, reason)
        attrs = self._attrs.get(key)
        if attrs is None:
            attrs = self._attrs.setdefault(key, {"instrument": instrument, "reason": reason})
        try:
            self._add(1, attrs)
        except Exception:  # pragma: no cover - the SDK itself failed; nothing more to do
            pass
        if key not in self._warned:
            self._warned.add(key)
            log.warning(
                "paid-telemetry: %s input to %s (%s); counted in "
                "paid_telemetry_dropped_records_total, further cases are not logged",
                reason, instrument, detail,
            )
        if self.strict and may_raise:
            raise TelemetryInputError(f"{instrument}: {reason}: {detail}")

    def fault(self, where: str, exc: Exception, pending: TelemetryInputError | None) -> TelemetryInputError | None:
        """``internal_error`` for a step of ending a scope: a strict-mode error is kept (the first
        one, in ``pending``) instead of raised, so the remaining steps still run."""
        try:
            self.internal_error(where, exc)
        except TelemetryInputError as err:
            return pending or err
        return pending

    def internal_error(self, where: str, exc: BaseException) -> None:
        """A bug of ours was caught so the caller never sees it (strict mode re-raises)."""
        if isinstance(exc, TelemetryInputError):
            raise exc
        log.debug("paid-telemetry internal error in %s", where, exc_info=exc)
        self.report(where, "internal_error", repr(exc)[:200])

    # -- numbers -----------------------------------------------------------------------
    def amount(self, instrument: str, value: Any) -> float | None:
        """A non-negative finite amount (count, cost, duration), or None if it must be dropped.

        Only numbers are numbers: a numeric string, bytes, a bool or ``np.bool_`` is ``wrong_type``.
        """
        if type(value) is int or type(value) is float:
            if 0 <= value <= MAX_COUNT:
                return value
            if value != value or value in (math.inf, -math.inf):
                self.report(instrument, "not_finite", describe(value))
            elif value < 0:
                self.report(instrument, "negative", describe(value))
            else:
                self.report(instrument, "out_of_range", describe(value))
            return None
        if isinstance(value, bool) or not isinstance(value, _NUMBERS):
            self.report(instrument, "wrong_type", type(value).__name__)
            return None
        try:
            number = math.nan if isinstance(value, Decimal) and value.is_nan() else float(value)
        except OverflowError:  # a Fraction or int subclass beyond float range
            self.report(instrument, "out_of_range", type(value).__name__)
            return None
        except Exception:  # a broken __float__
            self.report(instrument, "wrong_type", type(value).__name__)
            return None
        return self.amount(instrument, number)

    def score(self, instrument: str, value: Any) -> float | None:
        """A quality score in [0, 1], or None."""
        number = self.amount(instrument, value)
        if number is None:
            return None
        if number > 1.0:
            self.report(instrument, "out_of_range", describe(value))
            return None
        return float(number)

    # -- labels ------------------------------------------------------------------------
    def label(self, instrument: str, value: Any) -> str:
        """A bounded, non-empty string label value."""
        if type(value) is not str:
            if value is None or not isinstance(value, (str, int)) or isinstance(value, bool):
                self.report(instrument, "wrong_type", type(value).__name__)
                if value is None:
                    return UNKNOWN
            value = safe_text(value)
        if not value or value.isspace():
            self.report(instrument, "empty_label", repr(value))
            return UNKNOWN
        if len(value) > self.max_label_length:
            self.report(instrument, "label_too_long", f"{len(value)} characters")
            value = value[: self.max_label_length]
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:  # lone surrogates (e.g. from surrogateescape): not UTF-8
                self.report(instrument, "not_utf8", "lone surrogate replaced by U+FFFD")
                value = _SURROGATES.sub("\ufffd", value)
        return str(value)


class LabelSets:
    """Per-instrument cache from raw label values to a sanitised attribute dict.

    A hit is one dict lookup, which keeps the hot path cheap. Distinct label sets are
    capped at ``cardinality_limit``; past it, open labels fold into ``_overflow`` (closed
    labels such as ``status`` keep their value) and every folded record is counted.
    """

    __slots__ = ("_cache", "_closed", "_guard", "_keys", "_name", "_on_new", "_seen")

    def __init__(
        self,
        inst: Instrument,
        guard: Guard,
        closed: Mapping[str, tuple[str, ...]] | None = None,
        on_new: Callable[[dict[str, str]], None] | None = None,
    ) -> None:
        self._name = inst.name
        self._keys = inst.labels
        self._guard = guard
        self._closed = dict(closed or {})
        self._cache: dict[tuple[Any, ...], dict[str, str]] = {}
        self._seen: set[tuple[str, ...]] = set()
        self._on_new = on_new

    def get(self, values: tuple[Any, ...]) -> dict[str, str]:
        try:
            return self._cache[values]
        except Exception:  # KeyError; TypeError (unhashable); anything a broken __hash__/__eq__ raises
            return self._admit(values)

    def __len__(self) -> int:
        return len(self._seen)

    def _admit(self, values: tuple[Any, ...]) -> dict[str, str]:
        guard, name = self._guard, self._name
        reports_before = guard.reports
        clean: list[str] = []
        for key, raw in zip(self._keys, values, strict=True):
            allowed = self._closed.get(key)
            if allowed is not None:
                value = _one_of(raw, allowed)
                if value is None:
                    guard.report(name, "invalid_value", f"{key}={safe_text(raw)[:40]!r}")
                    value = OTHER
                clean.append(value)
            else:
                clean.append(guard.label(name, raw))
        sanitised = tuple(clean)
        if sanitised not in self._seen:
            if len(self._seen) >= guard.cardinality_limit:
                guard.report(name, "cardinality_overflow", f"more than {guard.cardinality_limit} label sets")
                folded = tuple(
                    v if k in self._closed else OVERFLOW for k, v in zip(self._keys, sanitised, strict=True)
                )
                self._seen.add(folded)  # at most one extra set per closed-label combination
                return dict(zip(self._keys, folded, strict=True))
            self._seen.add(sanitised)
        attrs = dict(zip(self._keys, sanitised, strict=True))
        if self._on_new is not None:
            self._on_new(attrs)
        if guard.reports != reports_before:
            return attrs  # sanitised input is not cached, so every occurrence is counted
        try:
            if len(self._cache) < 2 * guard.cardinality_limit:
                self._cache[values] = attrs
        except Exception:  # unhashable (or broken __hash__) raw value: fine, just not cached
            pass
        return attrs


def _one_of(raw: Any, allowed: tuple[str, ...]) -> str | None:
    """The allowed value ``raw`` equals (a str or str subclass such as a StrEnum), else None.

    Compares with ``str.__eq__`` so an object with a broken ``__eq__`` cannot raise here.
    """
    if isinstance(raw, str):
        for value in allowed:
            if str.__eq__(raw, value) is True:
                return value
    return None
