"""LLM prices from genai-prices, cached as rate cards.

A full ``calc_price`` call costs ~100 us, too slow for the hot path, so each (provider,
model) is resolved once into a rate card (per-million-token rates plus the "cliff" tiers
genai-prices uses) and re-resolved hourly, since prices change on dates. Only input and
output tokens are priced; cache-read/write tokens are not part of this API.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

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


def _trim_genai_prices_caches() -> None:
    """Empty genai-prices' own lookup caches, which keep every model name ever asked for.

    They are private (``DataSnapshot._lookup_cache`` and friends), so this is defensive: a
    future genai-prices without them is fine. We only call it when our own cache is full,
    so a few thousand distinct names are looked up again at most once an hour.
    """
    try:
        from genai_prices import data_snapshot

        snapshot = data_snapshot.get_snapshot()
    except Exception:
        return
    for name in ("_lookup_cache", "_provider_cache", "_provider_misses"):
        cache = getattr(snapshot, name, None)
        if isinstance(cache, dict | set):
            cache.clear()


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
                _trim_genai_prices_caches()
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
