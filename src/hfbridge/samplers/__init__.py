"""hfbridge.samplers (being built)."""

__all__: list[str] = []
