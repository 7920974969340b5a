"""The three steps the functions call: accept (intake), watch (monitor), finalize."""
from shared.accept import accept
from shared.finalize import finalize
from shared.watch import watch

__all__ = ["accept", "watch", "finalize"]
