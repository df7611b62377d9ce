"""Diff-ResNet: diffusion mechanism in residual neural networks (Wang, Dou, Bao, Shi; TPAMI 2024)."""
