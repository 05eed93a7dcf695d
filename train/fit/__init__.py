"""Training: the run's config and presets (config), `train()` and the stability protocol (trainer), the steps of one
run (steps), fine-tuning levers (finetune), decision thresholds (thresholds), the novelty table (novelty_fit) and
the retake gate fitted on the train photos (gate_fit)."""
