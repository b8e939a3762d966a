"""A deterministic stand-in for an LLM client: no network, no API key, same answers every time.

Each call's tokens, latency, failure and quality are a pure function of
``(seed, project_id, agent_type, session, step)``, so a run gives the same result in any
process and in any order (activities run concurrently, a shared RNG would not be).
One project is costly (20x the tokens, slower); a small share of calls fails like a
real provider does (rate limits, context overflows).
"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass

PROJECTS: tuple[str, ...] = ("acme", "globex", "initech")
COSTLY_PROJECT = "globex"
AGENT_TYPES: tuple[str, ...] = ("coder", "reviewer", "planner")
# The model each agent type calls (all priced by genai-prices, so cost is recorded).
MODELS: dict[str, tuple[str, str]] = {
    "coder": ("anthropic", "claude-sonnet-4-5"),
    "reviewer": ("openai", "gpt-4o"),
    "planner": ("openai", "gpt-4o-mini"),
}
MAX_STEPS = 8


class LLMError(Exception):
    """What a provider error looks like to the agent (it gives up on it)."""


@dataclass(frozen=True)
class Completion:
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    latency_s: float
    done: bool  # the agent considers its task finished after this reply
    quality: float  # how good the reply is, in [0, 1] (an evaluator's score)


class FakeLLM:
    """``complete()`` is deterministic; ``acomplete()`` also waits the simulated latency."""

    def __init__(self, seed: int = 7, *, failure_rate: float = 0.04, latency_scale: float = 1.0,
                 costly_projects: tuple[str, ...] = (COSTLY_PROJECT,)) -> None:
        self.seed = seed
        self.failure_rate = failure_rate
        self.latency_scale = latency_scale
        self.costly_projects = costly_projects

    @classmethod
    def from_env(cls) -> FakeLLM:
        """FAKE_LLM_SEED, FAKE_LLM_FAILURE_RATE, FAKE_LLM_LATENCY_SCALE (0 = instant replies)."""
        return cls(
            seed=int(os.environ.get("FAKE_LLM_SEED", "7")),
            failure_rate=float(os.environ.get("FAKE_LLM_FAILURE_RATE", "0.04")),
            latency_scale=float(os.environ.get("FAKE_LLM_LATENCY_SCALE", "1.0")),
        )

    def complete(self, *, project_id: str, agent_type: str, session: str, step: int) -> Completion:
        """The reply to step ``step`` (1-based) of an agent session; raises LLMError for a failed call."""
        _, reply = self._draw(project_id, agent_type, session, step)
        if isinstance(reply, LLMError):
            raise reply
        return reply

    async def acomplete(self, *, project_id: str, agent_type: str, session: str, step: int) -> Completion:
        """Like ``complete()``, after the simulated latency (failed calls take time too)."""
        latency, reply = self._draw(project_id, agent_type, session, step)
        if latency > 0:
            await asyncio.sleep(latency)
        if isinstance(reply, LLMError):
            raise reply
        return reply

    def _draw(self, project_id: str, agent_type: str, session: str, step: int) -> tuple[float, Completion | LLMError]:
        rng = random.Random(f"{self.seed}/{project_id}/{agent_type}/{session}/{step}")
        costly = project_id in self.costly_projects
        latency = rng.uniform(0.03, 0.2) * (2 if costly else 1) * self.latency_scale
        if rng.random() < self.failure_rate:
            return latency, LLMError(rng.choice(("429 rate limited", "400 context length exceeded", "503 overloaded")))
        provider, model = MODELS.get(agent_type, MODELS["coder"])
        scale = 20 if costly else 1
        return latency, Completion(
            provider=provider,
            model=model,
            input_tokens=rng.randint(800, 4000) * scale,
            output_tokens=rng.randint(100, 1200) * scale,
            latency_s=latency,
            done=step >= MAX_STEPS or (step >= 2 and rng.random() < 0.4),
            quality=round(rng.uniform(0.45, 1.0), 2),
        )
