"""Fusion: composed queries, zero-shot labels and the cross-attention matcher that re-ranks the dual encoder."""
