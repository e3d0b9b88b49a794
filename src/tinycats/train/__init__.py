"""The training engine: one resumable loop for every task (see engine.py)."""

from tinycats.train.engine import TrainResult
from tinycats.train.preemption import PreemptionGuard
from tinycats.train.resume import RunPlan, claim_run
from tinycats.train.run import run_training

__all__ = ["PreemptionGuard", "RunPlan", "TrainResult", "claim_run", "run_training"]
