"""MGFEN training side: synthetic data, background replacement, model, loss and evaluation (torch only where needed)."""
