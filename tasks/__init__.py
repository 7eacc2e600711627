"""Measurement tasks. Each module registers its task with `harness.engine.registry.register_task`."""
