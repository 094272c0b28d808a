"""Flax NNX Llama-family decoder: configuration, logical axes, modules."""
