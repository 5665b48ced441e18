"""The command-line program: argument parsing, configuration, exit codes and wiring."""
