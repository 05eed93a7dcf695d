"""The console scripts of the training side, click only: mgfen-data (mgfen_data, with data_audit and
data_background), mgfen-train (mgfen_train), mgfen-eval (mgfen_eval)."""
