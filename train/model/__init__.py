"""The multi-scale classifier: backbones with ImageNet weights (backbones), MGFEN itself: FPN features, heatmap
part proposals and the heatmap-weighted vote (mgfen), its loss (loss) and checkpoints (checkpoint)."""
