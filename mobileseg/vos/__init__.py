"""Reuse-gated video object segmentation (G-FRTM-fast): model blocks, static subgraphs, the host-side
session over any runtime, sequence generator, gate training, export, parity and speed vs τ (docs/vos.md)."""
