"""Micro-grained feature enhancement (the paper's background replacement): one-shot foreground extraction
(foreground) and masks for a data folder (masks), the background library (backgrounds), blending a foreground
onto a new background, online in training (blend), and an offline background-replaced copy of a dataset (augment)."""
