"""The console scripts of the scanner side, click only: mgfen-scan (scan_cli), mgfen-bench (bench_cli),
mgfen-keygen (keygen_cli), and the error boundary every console script shares (cli_errors)."""
