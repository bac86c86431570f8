"""Deterministic built-in test encoders (placeholder until the plugin system lands)."""
