"""chinwag: a local, real-time streaming chatbot and voice assistant server."""

from pathlib import Path

__version__ = "0.1.0"

# The checkout (or installed tree) that holds models/ and prompts/ beside server/.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
