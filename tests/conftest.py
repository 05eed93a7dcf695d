"""Make tests/ importable (fake_bundle.py) for every test module."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
