"""Rollout engines the training core takes from this layer (it imports no serving stack)."""
