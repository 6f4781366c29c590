"""Ray job driver: `colorfilter prepare` as `python -m pipelines.prepare` (cli.job_main)."""

from colorfilter.cli import job_main

if __name__ == "__main__":
    job_main("prepare")
