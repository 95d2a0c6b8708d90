"""Clients of the chinwag server: the command-line chat and talk tools, the web widget."""
