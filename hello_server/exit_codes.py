"""hello-server's exit codes: one set for the single-process server and the --workers supervisor."""

EXIT_OK = 0  # drained and stopped (with --workers: every worker did)
EXIT_FORCED = 1  # a second signal cut the drain short (with --workers: or a worker's drain failed)
EXIT_USAGE = 2
EXIT_STARTUP_FAILURE = 3  # cannot listen on the address (with --workers: or a worker did not start)
EXIT_WORKERS_FAILED = 4  # --workers: workers kept dying, past the restart limit
