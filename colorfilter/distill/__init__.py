"""The cascade: a cheap scorer distilled from the LM pair picks the candidates it scores.

Modules: config (settings), sample (the seeded sample), features (hashed n-grams), model (the
ridge regression and its weight tables), train (fitting on the sample, the fidelity report),
cheap (cheap scores for the pool), candidates (the top keep_ratio x N / tau_min and the recall
estimate), rows (which rows the LM pair scores), fidelity (metrics), stage (`colorfilter distill`).
"""
