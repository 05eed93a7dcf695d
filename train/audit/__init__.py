"""`mgfen-data audit`: what a data folder teaches before any model is trained. The audit (folder_audit) and its
rendering (render); per-image metadata and pixel statistics (image_meta, image_stats), the shortcut baselines
and linear probe (baselines, classifiers, probe) and how the photos' resolution meets a preset (resolution)."""
