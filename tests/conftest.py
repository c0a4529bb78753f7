"""Shared by unit and integration tests: dev/ (services, sample images) on the import path."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "dev"))
