"""Exit status of every command: 0 success, 1 the work failed, 2 a usage or settings error."""

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
