"""The model bundle as the runtime reads it: its manifest (manifest), Ed25519 signature (signing) and the
INT8 verdict-gate record that decides which precision runs (int8_gate)."""
