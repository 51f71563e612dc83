"""`python -m sepo`: the same command line as the `sepo` script."""

from sepo.cli import app

app(prog_name="sepo")
