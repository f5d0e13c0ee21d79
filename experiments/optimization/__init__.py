"""Optimization studies: a Frank-Wolfe library (frank_wolfe.py, incl. RowCardinalitySet for
pruning), the lower bound on the unit ball (lower_bound.py), rates (rates.py), LM optimizer sweeps
(train.py, sweep.py). Entry points: python -m experiments.optimization --help."""
