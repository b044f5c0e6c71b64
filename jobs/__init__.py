"""Long work as database rows: status, progress and checkpoint outlive the worker (docs/jobs.md)."""
