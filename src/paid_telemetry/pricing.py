"""LLM prices from genai-prices, cached as rate cards.

A full ``calc_price`` call costs ~100 us, too slow for the hot path, so each (provider,
model) is resolved once into a rate card (per-million-token rates plus the "cliff" tiers
genai-prices uses) and re-resolved hourly, since prices change on dates. Input tokens
include cache reads and writes (as in genai-prices' ``Usage`` and the GenAI semantic
conventions); those two are priced at their own rates when the model lists them, else as input.
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
    cache_read: tuple[float, tuple[tuple[int, float], ...]] | None = None  # None: priced as input
    cache_write: tuple[float, tuple[tuple[int, float], ...]] | None = None

    def cents(
        self, input_tokens: float, output_tokens: float, cache_read: float = 0, cache_write: float = 0
    ) -> float:
        """Price in cents; ``input_tokens`` includes ``cache_read`` and ``cache_write``."""
        rin = _tier(self.input_base, self.input_tiers, input_tokens)
        rout = _tier(self.output_base, self.output_tiers, input_tokens)
        if not (cache_read or cache_write):
            return (input_tokens * rin + output_tokens * rout) / 10_000.0  # $/MTok -> cents/token
        rread = rin if self.cache_read is None else _tier(*self.cache_read, input_tokens)
        rwrite = rin if self.cache_write is None else _tier(*self.cache_write, input_tokens)
        uncached = max(0.0, input_tokens - cache_read - cache_write)
        return (uncached * rin + cache_read * rread + cache_write * rwrite + output_tokens * rout) / 10_000.0


def _tier(base: float, tiers: tuple[tuple[int, float], ...], input_tokens: float) -> float:
    """genai-prices' "cliff" tiers: past a tier's start (in total input tokens) all tokens pay its rate."""
    rate = base
    for start, price in tiers:
        if input_tokens > start:
            rate = price
    return rate


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

    def cents(
        self, provider: str, model: str, input_tokens: float, output_tokens: float,
        cache_read: float = 0, cache_write: float = 0,
    ) -> float | None:
        rates = self.rates(provider, model)
        return None if rates is None else rates.cents(input_tokens, output_tokens, cache_read, cache_write)

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
        read = getattr(mp, "cache_read_mtok", None)
        write = getattr(mp, "cache_write_mtok", None)
        return _Rates(
            in_base, out_base, in_tiers, out_tiers,
            None if read is None else _split(read), None if write is None else _split(write),
        )


# GenAI semantic-convention provider names (``gen_ai.provider.name`` and the older
# ``gen_ai.system``) that differ from genai-prices' provider ids.
_PROVIDER_IDS = {
    "az.ai.openai": "azure",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "az.ai.inference": "azure",
    "aws.bedrock": "aws",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "vertex_ai": "google",
    "gemini": "google",
    "x_ai": "x-ai",
    "xai": "x-ai",
    "mistral_ai": "mistral",
}
_normalised: dict[str, str] = {}


def provider_id(name: str) -> str:
    """The genai-prices provider id for a semantic-convention provider name (lower-cased otherwise)."""
    hit = _normalised.get(name)
    if hit is None:
        low = name.strip().lower()
        hit = _PROVIDER_IDS.get(low, low)
        if len(_normalised) < _MAX_ENTRIES:
            _normalised[name] = hit
    return hit
