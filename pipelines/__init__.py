"""Ray job entry points: `python -m pipelines.<stage> CONFIG [--set k=v ...] [--overwrite]`.

One module per stage plus `run_all`; each runs as a Ray job's driver (see docs/ray_jobs.md) and
joins the job's cluster instead of starting its own Ray.
"""
