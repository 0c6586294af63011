"""The flow declaration model: what a defs.yaml may say."""
