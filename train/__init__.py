"""mer's PyTorch side: the EfficientFace + audio CNN fusion models, data and training."""
