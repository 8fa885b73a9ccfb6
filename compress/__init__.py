"""Compression stages: distillation, structured pruning, INT8 post-training quantisation, FP16, QAT. Each
returns a new model (or graph) and a record of what it did, and measures its PSNR drop against its parent
(the quality budget)."""
