"""Ray job driver: `colorfilter select` as `python -m pipelines.select` (cli.job_main)."""

from colorfilter.cli import job_main

if __name__ == "__main__":
    job_main("select")
