"""Ray job driver: `colorfilter distill` as `python -m pipelines.distill` (cli.job_main)."""

from colorfilter.cli import job_main

if __name__ == "__main__":
    job_main("distill")
