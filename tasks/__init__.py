"""Measurement tasks. Each module registers its task with `harness.registry.register_task`."""
