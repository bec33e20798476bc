"""A Django app for the consumer tests' child processes: a slow consumer
that records what it handles, and one that always fails."""
