"""Ray job driver: `colorfilter train-conditional` as `python -m pipelines.train_conditional`
(cli.job_main)."""

from colorfilter.cli import job_main

if __name__ == "__main__":
    job_main("train-conditional")
