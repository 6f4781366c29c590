"""Ray job entry points: `python -m pipelines.<stage> CONFIG [--set k=v ...] [--overwrite]`.

One module per stage plus `run_all` (`colorfilter run`); each runs that `colorfilter` command as a
Ray job's driver (see docs/ray_jobs.md and `colorfilter.cli.job_main`): the same options, help,
output and exit codes, except that it joins the job's cluster instead of starting its own Ray.
"""
