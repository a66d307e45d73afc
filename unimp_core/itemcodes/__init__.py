"""Semantic item ids: `unimp tokenize-items` (residual quantisation of item embeddings) and the codes the
tasks read (`unimp_core.itemcodes.codes`, torch-free)."""
