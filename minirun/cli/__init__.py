"""The command line: a click group with global options, one small module per verb."""
