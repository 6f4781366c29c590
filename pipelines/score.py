"""Ray job driver: `colorfilter score` as `python -m pipelines.score` (cli.job_main)."""

from colorfilter.cli import job_main

if __name__ == "__main__":
    job_main("score")
