"""Compression: distillation, structured pruning, INT8 quantisation. Each returns a new model (or graph)
and a record of what it did, and measures its PSNR drop against its parent (the quality budget)."""
