"""The ``clipseek`` command line: ``main.py`` holds the group and the collection commands,
``model.py`` the ``model`` group, ``classify.py`` zero-shot labelling of files."""

from .main import cli, main

__all__ = ["cli", "main"]
