"""Long work as database rows: a job's status, progress and checkpoint outlive the worker (docs/jobs.md)."""
