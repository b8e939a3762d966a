"""Token usage and LLM cost.

Prices come from `genai-prices` (a maintained price table). A full ``calc_price`` call
costs ~100 us, too slow for the hot path, so each (provider, model) is resolved once
into a rate card (per-million-token rates plus the "cliff" tiers genai-prices uses)
and re-resolved hourly, since prices change on dates. Only input and output tokens are
priced; cache-read/write tokens are not part of this API.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from paid_telemetry.catalogue import COST_CENTS, TOKENS
from paid_telemetry.guard import safe_text

if TYPE_CHECKING:
    from paid_telemetry.runtime import Telemetry

_TTL_S = 3600.0
_MAX_ENTRIES = 4096


@dataclass(frozen=True, slots=True)
class _Rates:
    """USD per million tokens, with cliff tiers keyed on total input tokens."""

    input_base: float
    output_base: float
    input_tiers: tuple[tuple[int, float], ...] = ()
    output_tiers: tuple[tuple[int, float], ...] = ()

    def cents(self, input_tokens: float, output_tokens: float) -> float:
        rin, rout = self.input_base, self.output_base
        for start, price in self.input_tiers:
            if input_tokens > start:
                rin = price
        for start, price in self.output_tiers:
            if input_tokens > start:
                rout = price
        return (input_tokens * rin + output_tokens * rout) / 10_000.0  # $/MTok -> cents/token


def _split(price: Any) -> tuple[float, tuple[tuple[int, float], ...]]:
    if price is None:
        return 0.0, ()
    if isinstance(price, Decimal | int | float):
        return float(price), ()
    base = float(price.base)
    return base, tuple((int(t.start), float(t.price)) for t in price.tiers)


class PriceBook:
    """Cached genai-prices lookups; unknown models price to None."""

    def __init__(self) -> None:
        self._rates: dict[tuple[str, str], tuple[float, _Rates | None]] = {}
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        """Load genai-prices' data once, so the first priced call does not pay for it."""
        self._resolve("openai", "gpt-4o")

    def rates(self, provider: str, model: str) -> _Rates | None:
        key = (provider, model)
        hit = self._rates.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < _TTL_S:
            return hit[1]
        rates = self._resolve(provider, model)
        with self._lock:
            if len(self._rates) >= _MAX_ENTRIES:
                self._rates.clear()
            self._rates[key] = (now, rates)
        return rates

    def cents(self, provider: str, model: str, input_tokens: float, output_tokens: float) -> float | None:
        rates = self.rates(provider, model)
        return None if rates is None else rates.cents(input_tokens, output_tokens)

    @staticmethod
    def _resolve(provider: str, model: str) -> _Rates | None:
        from genai_prices import Usage, calc_price

        try:
            calc = calc_price(Usage(input_tokens=1, output_tokens=1), model_ref=model, provider_id=provider.lower())
        except (LookupError, ValueError):
            return None
        mp = calc.model_price
        in_base, in_tiers = _split(getattr(mp, "input_mtok", None))
        out_base, out_tiers = _split(getattr(mp, "output_mtok", None))
        return _Rates(in_base, out_base, in_tiers, out_tiers)


def _given(value: Any) -> bool:
    return not (value is None or (type(value) in (int, float) and value == 0))


def record_usage(
    t: Telemetry,
    project_id: Any,
    provider: Any,
    model: Any,
    input_tokens: Any,
    output_tokens: Any,
    cost_cents: Any,
) -> tuple[float, float, float | None]:
    """Record tokens and cost; returns what was accepted (for span attributes)."""
    guard = t.guard
    # None means "the client reported no usage"; 0 is a real zero; anything else is checked
    # (without comparing it: == on an arbitrary object, e.g. Decimal('sNaN'), may raise).
    tin = guard.amount(TOKENS.name, input_tokens) if _given(input_tokens) else 0
    tout = guard.amount(TOKENS.name, output_tokens) if _given(output_tokens) else 0
    if tin:
        t.tokens.add(tin, t.token_labels.get((project_id, provider, model, "input")))
    if tout:
        t.tokens.add(tout, t.token_labels.get((project_id, provider, model, "output")))
    if cost_cents is None:
        cents = None
        if type(provider) is str and type(model) is str:
            cents = t.prices.cents(provider, model, tin or 0, tout or 0)
        if cents is None:
            detail = f"{safe_text(provider)[:40]}/{safe_text(model)[:60]}"
            guard.report(COST_CENTS.name, "unpriced_model", detail, may_raise=False)
            return tin or 0, tout or 0, None
    else:
        cents = guard.amount(COST_CENTS.name, cost_cents)
    if cents:
        t.cost.add(cents, t.cost_labels.get((project_id, provider)))
    return tin or 0, tout or 0, cents
