"""Contrastive alignment: train and evaluate open_clip dual encoders, and the synthetic world they learn from."""
