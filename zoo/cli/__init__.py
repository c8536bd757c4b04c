"""Command-line launchers installed with the package (`zoo-train`); experiments/*.py call the same code."""
