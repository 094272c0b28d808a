"""`jaxtune verify`: the same prompts through the Flax model, transformers and the served model.

Test before deploy: a checkpoint (full or LoRA) or an export is scored by every runtime it will
meet, and each pair of runtimes is compared against tolerances that depend on the weight dtype.
"""
