"""Where the repo and its serve_config/ are: the one place servectl's modules take them from."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVE_CONFIG = REPO / "serve_config"
