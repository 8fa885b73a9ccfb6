"""Training stages: ``train`` (data + config -> model artifact) and ``gan`` (perceptual + adversarial
fine-tune). Both use the core's training engine, :mod:`edgesr.fitting`."""
