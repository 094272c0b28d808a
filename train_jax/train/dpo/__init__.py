"""Direct preference optimisation: loss, reference model, jitted step and the training loop."""
