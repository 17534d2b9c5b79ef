"""The `trainscale` command line: the parser, one module per command, and the progress display."""
