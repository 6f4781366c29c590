"""Integrations with other data frameworks, each an optional extra (imported only when used):

- `colorfilter.integrations.datatrove.ColorFilterScoreFilter`: a datatrove pipeline step that
  scores documents and keeps those at or above a threshold, or only annotates their metadata
  (`pip install -e ".[datatrove]"`).
- `colorfilter.integrations.ray_data.ColorFilterBatchScorer`: a callable class for Ray Data's
  `Dataset.map_batches` that adds prior_loss, cond_loss and score columns (Ray is a core
  dependency).

Both build a `colorfilter.Scorer` from a run folder once per worker (datatrove task process, Ray
actor) and score the way `Scorer.score_texts` / `Scorer.score_ids` do.
"""
