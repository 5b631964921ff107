"""The ``msvit-edge`` command line: a thin Typer shell over the library."""
