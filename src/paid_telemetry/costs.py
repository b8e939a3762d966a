"""Token usage and LLM cost: tokens counted, cost priced (see ``pricing``) and counted.

The :class:`Ledger` keeps one LLM call from being counted twice when it is both recorded by
hand (``record_tokens``) and seen on a GenAI span (``genai_spans``): see docs/genai.md.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from paid_telemetry.catalogue import COST_CENTS, TOKENS
from paid_telemetry.guard import safe_text
from paid_telemetry.pricing import provider_id
from paid_telemetry.runtime import Telemetry

MAX_MODEL_REF = 256  # longer provider/model strings are not real model names: unpriced, never looked up
# gen_ai.operation.name values of an LLM call whose usage is counted ("completion": OpenLLMetry's
# older llm.request.type). Agent, tool and workflow spans carry totals of their children: never counted.
LLM_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "embeddings", "completion"})


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
    cache_read: float = 0,
    cache_write: float = 0,
) -> tuple[float, float, float | None]:
    """Record tokens and cost; returns what was accepted (for span attributes).

    ``input_tokens`` includes ``cache_read`` and ``cache_write`` (trusted numbers from a span,
    already checked); the counter gets them under their own ``type`` and the rest as ``input``.
    """
    guard = t.guard
    # None means "the client reported no usage"; 0 is a real zero; anything else is checked
    # (without comparing it: == on an arbitrary object, e.g. Decimal('sNaN'), may raise).
    tin = guard.amount(TOKENS.name, input_tokens) if _given(input_tokens) else 0
    tout = guard.amount(TOKENS.name, output_tokens) if _given(output_tokens) else 0
    labels = t.metrics.token_labels
    if tin:
        cache_read = min(cache_read, tin)
        cache_write = min(cache_write, tin - cache_read)
        uncached = tin - cache_read - cache_write
        if uncached:
            t.metrics.tokens.add(uncached, labels.get((project_id, provider, model, "input")))
        if cache_read:
            t.metrics.tokens.add(cache_read, labels.get((project_id, provider, model, "cache_read")))
        if cache_write:
            t.metrics.tokens.add(cache_write, labels.get((project_id, provider, model, "cache_write")))
    else:
        cache_read = cache_write = 0
    if tout:
        t.metrics.tokens.add(tout, labels.get((project_id, provider, model, "output")))
    if cost_cents is None:
        cents = None
        if (type(provider) is str and type(model) is str
                and len(model) <= MAX_MODEL_REF and len(provider) <= MAX_MODEL_REF):
            cents = t.prices.cents(provider, model, tin or 0, tout or 0)
        if type(provider) is str and type(model) is str:
            cents = t.prices.cents(provider, model, tin or 0, tout or 0, cache_read, cache_write)
        if cents is None:
            detail = f"{safe_text(provider)[:40]}/{safe_text(model)[:60]}"
            guard.report(COST_CENTS.name, "unpriced_model", detail, may_raise=False)
            return tin or 0, tout or 0, None
    else:
        cents = guard.amount(COST_CENTS.name, cost_cents)
    if cents:
        t.metrics.cost.add(cents, t.metrics.cost_labels.get((project_id, provider)))
    return tin or 0, tout or 0, cents


_Entry = tuple[Any, str, Any, float, float]  # project, provider id, model(s), input, output


class Ledger:
    """Recent LLM calls of one agent run (or of all calls outside runs), recorded by hand or
    from a span, so the second record of the same call is recognised and skipped.

    Same call means: same project, provider (normalised), model (a span's request or response
    model) and the same input and output token counts. A hand record made while the GenAI span
    is current marks that span, whatever its numbers.
    """

    __slots__ = ("_from_hand", "_from_spans", "_lock", "_marked")
    _SIZE = 64

    def __init__(self) -> None:
        self._lock = threading.Lock()  # a run's calls may end in several threads at once
        self._from_hand: deque[_Entry] = deque(maxlen=self._SIZE)
        self._from_spans: deque[_Entry] = deque(maxlen=self._SIZE)
        self._marked: deque[int] = deque(maxlen=self._SIZE)

    # -- a hand record ------------------------------------------------------------------
    def hand(self, project: Any, provider: Any, model: Any, tin: Any, tout: Any, span_id: int | None) -> bool:
        """Note a hand record; False when a span already recorded this call (skip it)."""
        if (type(provider) is not str or type(tin) not in (int, float) or type(tout) not in (int, float)
                or not _small(model) or not _small(project) or len(provider) > MAX_MODEL_REF):
            return True  # never kept: a 1 MiB model name in 64 entries would hold 64 MiB
        prov = provider_id(provider)
        with self._lock:
            for entry in self._from_spans:
                if entry[1] == prov and entry[3] == tin and entry[4] == tout and entry[0] == project \
                        and model in entry[2]:
                    self._from_spans.remove(entry)
                    return False
            if span_id is not None:
                self._marked.append(span_id)
            else:
                self._from_hand.append((project, prov, model, tin, tout))
        return True

    # -- a span record ------------------------------------------------------------------
    def span(self, span_id: int, project: Any, provider: str, models: tuple[Any, ...], tin: Any, tout: Any) -> bool:
        """Note a span's usage; False when it was recorded by hand already (skip it)."""
        if not _small(project) or not all(_small(m) for m in models):
            return True
        with self._lock:
            if span_id in self._marked:
                self._marked.remove(span_id)
                return False
            for entry in self._from_hand:
                if entry[1] == provider and entry[3] == tin and entry[4] == tout and entry[0] == project \
                        and entry[2] in models:
                    self._from_hand.remove(entry)
                    return False
            self._from_spans.append((project, provider, models, tin, tout))
        return True


def _small(value: Any) -> bool:
    """A value a ledger entry may keep: an int, or a string no longer than a real model name."""
    return type(value) is int or (type(value) is str and len(value) <= MAX_MODEL_REF) or value is None


OUTSIDE_RUNS = Ledger()  # calls recorded outside any agent run (by project)
