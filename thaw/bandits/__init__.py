"""Exploration for cold-start: bandit policies, offline evaluation and regret simulation.

Policies (``select(ctx, candidates, n)``, ``update(ctx, item, reward)``, ``save``/``Policy.load``):
``RandomPolicy``, ``EpsilonGreedy``, ``UCB1``, ``ThompsonBeta``, ``ThompsonGaussian``, ``LinUCB``,
``LinearTS``. ``ExploringRecommender`` lets a policy fill the first slots of any model's list.
"""

from thaw.bandits.features import JoinedFeatures, ProfileFeatures, TableEncoder, VectorFeatures
from thaw.bandits.linear import LinearTS, LinUCB
from thaw.bandits.offline import (
                                  BanditLog,
                                  Estimate,
                                  ItemMeanReward,
                                  NonUniformLoggingWarning,
                                  doubly_robust,
                                  ips,
                                  off_policy_estimates,
                                  read_log_csv,
                                  replay,
                                  snips,
)
from thaw.bandits.policies import (
                                  UCB1,
                                  Decision,
                                  DecisionLog,
                                  EpsilonGreedy,
                                  Policy,
                                  RandomPolicy,
                                  ThompsonBeta,
                                  ThompsonGaussian,
)
from thaw.bandits.wrapper import ExploringRecommender, Slate

__all__ = [
    "BanditLog", "Decision", "DecisionLog", "EpsilonGreedy", "Estimate", "ExploringRecommender", "ItemMeanReward",
    "JoinedFeatures", "LinUCB", "LinearTS", "NonUniformLoggingWarning", "Policy", "ProfileFeatures", "RandomPolicy",
    "Slate", "TableEncoder", "ThompsonBeta", "ThompsonGaussian", "UCB1", "VectorFeatures", "doubly_robust", "ips",
    "off_policy_estimates", "read_log_csv", "replay", "snips",
]
