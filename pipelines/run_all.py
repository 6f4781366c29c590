"""Ray job driver: `colorfilter run` as `python -m pipelines.run_all` (cli.job_main)."""

from colorfilter.cli import job_main

if __name__ == "__main__":
    job_main("run")
