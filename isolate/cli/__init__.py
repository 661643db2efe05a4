"""The `isolate` command line, a thin front end over the library: main.py
parses the arguments and imports only what the subcommand needs."""
