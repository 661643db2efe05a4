"""The `isolate` command line, a thin front end over the library.

main.py parses the arguments (with the run and exec options of options.py)
and imports only the module of the subcommand that runs: run.py (run,
exec), containers.py (ps, kill, rm) or images.py (import, images, rmi).
output.py escapes what reaches the terminal; progress.py draws the
progress bar of image imports."""
