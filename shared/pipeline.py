"""The steps the functions call: accept (intake) and continue_submission, watch (monitor), finalize."""
from shared.accept import accept, continue_submission
from shared.finalize import finalize
from shared.watch import watch

__all__ = ["accept", "continue_submission", "watch", "finalize"]
