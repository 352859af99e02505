"""The ``panacea-patch`` command line: click commands over the library (ships as ``panacea_patch.cli``)."""
