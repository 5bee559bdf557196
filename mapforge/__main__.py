from mapforge.cli import entry

entry()
