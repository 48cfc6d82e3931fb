"""kopf wiring only: each handler is a few lines that call into the shell (runtime/reconcile).

`register(registry, settings)` attaches them, since the timer interval is a setting.
"""

from .rollouts import register

__all__ = ["register"]
