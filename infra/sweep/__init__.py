"""`jaxtune sweep`: grid search over training config overrides, scored on validation."""
