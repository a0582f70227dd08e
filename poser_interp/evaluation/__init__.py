"""Evaluation: the runner, the results store, confidence matching, metrics, ensembles."""
