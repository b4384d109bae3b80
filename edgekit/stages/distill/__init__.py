"""Knowledge distillation: loss functions by name, the training loop, cached teacher outputs."""
