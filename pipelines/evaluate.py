"""Ray job driver: `colorfilter evaluate` as `python -m pipelines.evaluate` (cli.job_main)."""

from colorfilter.cli import job_main

if __name__ == "__main__":
    job_main("evaluate")
