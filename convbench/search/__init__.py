"""Hyperparameter search on Optuna: `SearchSpace` declares it, ``convbench search`` runs its workers.

    from optuna.distributions import FloatDistribution
    from convbench import Case
    from convbench.search import SearchSpace

    SPACE = SearchSpace(base=Case(...), params={"lr": FloatDistribution(1e-4, 0.5, log=True)}, trials=20)
"""

from convbench.search.space import Objective, SearchSpace, SearchSpaceError

__all__ = ["Objective", "SearchSpace", "SearchSpaceError"]
