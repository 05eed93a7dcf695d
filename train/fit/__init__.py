"""Training: the run's config and presets (config), `train()` and the stability protocol (trainer), the steps of one
run (steps), fine-tuning levers (finetune), decision thresholds (thresholds) and the novelty table (novelty_fit)."""
