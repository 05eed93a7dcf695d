"""A checkpoint on a split: predictions (predict), metrics (metrics), the `mgfen-eval` report and overlays
(report), risk-coverage (risk_coverage), group-aware intervals (resample), the background-reliance suite
(bg_suite, bg_report), out-of-domain refusal (ood) and the baselines beside the checkpoint (vs_baselines)."""
