"""Which files the chinwag wheel carries; everything else about the project is in pyproject.toml.

The personas (prompts/*.toml) and the model manifest (models/manifest.toml) stay at the top of
the checkout, where people edit them and where `make models` puts the weights. A wheel must
carry them inside a package, so the data-only packages `server._data.prompts` and
`server._data.models` are mapped onto those two directories (only the listed files are taken;
downloaded weights never are). An installed chinwag reads them from server/_data/, a checkout
from prompts/ and models/ (see server/__init__.py). The web widget is package data of `clients`.

This lives here and not in pyproject.toml because pyproject's `packages` is either a `find`
directive or a fixed list: the mapped packages cannot be added to what `find` discovers there,
and a fixed list would silently leave out any new subpackage of server/ or clients/.
"""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["server", "server.*", "clients", "clients.*"]),
        "clients.web",
        "server._data.prompts",
        "server._data.models",
    ],
    package_dir={"server._data.prompts": "prompts", "server._data.models": "models"},
    package_data={
        "clients.web": ["*"],
        # chinwag's own sentence templates (docs/intents.md).
        "server.intents": ["sentences/*.yaml"],
        # The personas and their site knowledge files (docs/personas.md).
        "server._data.prompts": ["*.toml", "*/*.md", "*/*.toml"],
        "server._data.models": ["manifest.toml", "presets.toml", "wake-words.toml"],
    },
)
