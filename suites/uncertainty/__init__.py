"""Uncertainty suite (issue #3): MC dropout, deep ensembles, temperature scaling,
calibration, the aleatoric/epistemic decomposition, selective prediction and OOD
detection. `functional` holds the maths, `ensemble` the sampling, `suite` the
`UncertaintySuite` (registered as "uncertainty"); see README.md."""
