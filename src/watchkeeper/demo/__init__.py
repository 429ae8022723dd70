"""A synthetic, deterministic incident to try Watchkeeper on: `watchkeeper demo` writes and hunts it."""

from watchkeeper.demo.scenario import Scenario, Step, generate

__all__ = ["Scenario", "Step", "generate"]
