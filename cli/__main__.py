"""``python -m panacea_patch.cli``: the same as the ``panacea-patch`` command."""

from .main import main

main()
