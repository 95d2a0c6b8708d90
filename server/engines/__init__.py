"""Engines: blocking model code behind small interfaces, no asyncio.

Each interface has one real backend and a fake for fast tests. The pipeline calls engines
from worker threads only, never on the event loop.
"""
