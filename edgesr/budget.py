"""The quality budget: every lossy stage's result is held to its PSNR drop against its parent, in one place
(:func:`edgesr.stages.run_stage`, for every stage the stage table marks ``lossy``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .errors import EdgesrError
from .progress import console

__all__ = ["Budget", "QualityBudgetExceeded", "check_budget", "float_until_within"]


class QualityBudgetExceeded(EdgesrError, RuntimeError):
    """A lossy step ran and lost more PSNR than its budget allows (exit code 3: the input was fine)."""

    exit_code = 3


def check_budget(step: str, parent_psnr: float, psnr: float, max_drop_db: float | None, on_exceeded: str) -> dict:
    """Return the budget record; raise :class:`QualityBudgetExceeded` when the drop is over budget and
    ``on_exceeded == 'fail'``."""
    drop = parent_psnr - psnr
    record = {"parent_psnr": round(parent_psnr, 4), "psnr": round(psnr, 4), "psnr_drop_db": round(drop, 4),
              "max_psnr_drop_db": max_drop_db, "within_budget": max_drop_db is None or drop <= max_drop_db}
    if not record["within_budget"]:
        msg = (f"{step}: PSNR dropped {drop:.3f} dB against its parent ({parent_psnr:.3f} -> {psnr:.3f} dB), over "
               f"the budget max_psnr_drop_db={max_drop_db}. Loosen the budget, or make the step gentler "
               "(lower prune ratio, more fine-tune steps, exclude sensitive layers from quantisation).")
        if on_exceeded == "fail":
            raise QualityBudgetExceeded(msg)
        console.print(f"[yellow]warning:[/] {msg}")
    return record


@dataclass(frozen=True)
class Budget:
    """The quality budget of a lossy stage (the stage table's ``lossy=True``), read once from its config
    (``max_psnr_drop_db``, ``on_budget_exceeded``) and applied the same way by every such stage.

    ``on_exceeded``: ``fail`` (the artifact never lands), ``warn``, or ``fallback`` (the stage first tries a
    gentler form it knows, e.g. mixed precision, and the result is then held to the budget as ``fail``)."""

    max_drop_db: float | None = None
    on_exceeded: str = "fail"

    @classmethod
    def of(cls, cfg) -> "Budget":
        return cls(getattr(cfg, "max_psnr_drop_db", None), getattr(cfg, "on_budget_exceeded", "fail"))

    def exceeded(self, parent_psnr: float, psnr: float) -> bool:
        return self.max_drop_db is not None and parent_psnr - psnr > self.max_drop_db

    @property
    def falls_back(self) -> bool:
        """Whether an over-budget result should first be made gentler by the stage (``fallback``)."""
        return self.on_exceeded == "fallback"

    def check(self, step: str, parent_psnr: float, psnr: float) -> dict:
        """The budget record; raises :class:`QualityBudgetExceeded` over budget unless the policy is ``warn``."""
        return check_budget(step, parent_psnr, psnr, self.max_drop_db,
                            "warn" if self.on_exceeded == "warn" else "fail")


def float_until_within(cost: dict[str, float], parent_psnr: float, psnr: float, max_drop_db: float,
                       apply: Callable[[list[str]], float]) -> tuple[list[str], float]:
    """The mixed-precision fallback every INT8 stage follows: the candidates (layers, activations) ranked by their
    measured cost, most first (ties in the given order), go back to floating point one more at a time, the graph
    re-measured each time (``apply(kept)`` writes it and returns its PSNR), until the drop against the parent
    fits ``max_drop_db`` or none is left. Returns those kept in float and the last PSNR."""
    kept: list[str] = []
    for name in sorted(cost, key=cost.get, reverse=True):
        if parent_psnr - psnr <= max_drop_db:
            break
        kept.append(name)
        psnr = apply(kept)
    return kept, psnr
