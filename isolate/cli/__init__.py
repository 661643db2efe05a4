"""The `isolate` command line, a thin front end over the library.

main.py parses the arguments (with the run and exec options of options.py)
and imports only the module of the subcommand that runs: run.py (run,
exec), containers.py (ps, kill, rm), lifecycle.py (wait, stop, start,
restart, logs), images.py (import, images, image inspect, rmi), inspect.py
(inspect, top), stats.py, pause.py (pause, unpause), transfer.py (cp,
commit), system.py (info, version) or completion.py (the bash completion
script, generated from main.py's parser).  output.py escapes what reaches
the terminal; progress.py draws the progress bar of image imports;
terminal.py relays a -t container's terminal."""
