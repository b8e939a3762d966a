"""Token usage and LLM cost: tokens counted, cost priced (see ``pricing``) and counted."""

from __future__ import annotations

from typing import Any

from paid_telemetry.catalogue import COST_CENTS, TOKENS
from paid_telemetry.guard import safe_text
from paid_telemetry.runtime import Telemetry

MAX_MODEL_REF = 256  # longer provider/model strings are not real model names: unpriced, never looked up


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
        t.metrics.tokens.add(tin, t.metrics.token_labels.get((project_id, provider, model, "input")))
    if tout:
        t.metrics.tokens.add(tout, t.metrics.token_labels.get((project_id, provider, model, "output")))
    if cost_cents is None:
        cents = None
        if (type(provider) is str and type(model) is str
                and len(model) <= MAX_MODEL_REF and len(provider) <= MAX_MODEL_REF):
            cents = t.prices.cents(provider, model, tin or 0, tout or 0)
        if cents is None:
            detail = f"{safe_text(provider)[:40]}/{safe_text(model)[:60]}"
            guard.report(COST_CENTS.name, "unpriced_model", detail, may_raise=False)
            return tin or 0, tout or 0, None
    else:
        cents = guard.amount(COST_CENTS.name, cost_cents)
    if cents:
        t.metrics.cost.add(cents, t.metrics.cost_labels.get((project_id, provider)))
    return tin or 0, tout or 0, cents
