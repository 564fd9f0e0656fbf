"""srstudy.models: plain-PyTorch networks (selective scan, low-rank Mamba mixer, DVMSR)."""
