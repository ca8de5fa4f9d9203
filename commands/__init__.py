"""The composition root: the ``billing`` command line and the commands that wire the layers
together (demo, replay, export, dead letters). See commands/README.md."""
