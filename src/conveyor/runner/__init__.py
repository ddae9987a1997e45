"""Running jobs: the supervisor, the worker loop, the retry policy."""
