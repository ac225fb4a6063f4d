"""Sphinx configuration for the syncws documentation.

Build with ``python -m sphinx -W -b html docs /tmp/docs-out`` from the
repository root. No extension here reaches the network (intersphinx is off on
purpose), so the build works offline.
"""

from __future__ import annotations

import os
import sys

# Document this checkout's syncws, whatever is installed.
sys.path.insert(0, os.path.abspath(".."))

from syncws.version import __version__  # noqa: E402

project = "syncws"
author = "the syncws authors"
copyright = "the syncws authors"
release = __version__
version = ".".join(__version__.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

exclude_patterns = ["_build"]
# A bare `name` in the text is code, as in the docstrings' habits.
default_role = "code"

# -- autodoc and napoleon -------------------------------------------------------

autodoc_member_order = "bysource"
# Types go into the parameter descriptions, which keeps the long signatures
# of connect() and serve() readable.
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_preserve_defaults = True

napoleon_google_docstring = True
napoleon_numpy_docstring = False
# "Attributes:" sections become fields of their class rather than separate
# attribute entries, which would clash with the ones autodoc finds on
# NamedTuples and dataclasses.
napoleon_use_ivar = True

# -- HTML -----------------------------------------------------------------------

html_theme = "alabaster"
html_theme_options = {
    "description": "Synchronous WebSocket client and server, with threads",
    "fixed_sidebar": True,
}
html_static_path: list = []
