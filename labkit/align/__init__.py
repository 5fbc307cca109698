"""Layer 7, align (chapters 15-16): the Bradley-Terry reward model, GAE and PPO, KL estimators, DPO.
"""
from __future__ import annotations

from .advantages import discounted_returns, gae, masked_mean, whiten  # noqa: F401
from .dpo import DPOConfig, DPOTrainer, dpo_loss  # noqa: F401
from .kl import exact_kl, kl_k1, kl_k2, kl_k3  # noqa: F401
from .policy import PolicyWithValue, ValueHead, frozen_copy, logits_and_hidden, response_stats, sample_responses  # noqa: F401
from .ppo import PPOConfig, PPOTrainer, ppo_clip_loss, value_loss  # noqa: F401
from .rewards import RewardModel, bradley_terry_loss, pairwise_accuracy, train_reward_model  # noqa: F401

__all__ = ["bradley_terry_loss", "pairwise_accuracy", "RewardModel", "train_reward_model", "masked_mean", "gae", "discounted_returns", "whiten", "kl_k1", "kl_k2", "kl_k3", "exact_kl", "logits_and_hidden", "ValueHead", "PolicyWithValue", "frozen_copy", "sample_responses", "response_stats", "ppo_clip_loss", "value_loss", "PPOConfig", "PPOTrainer", "dpo_loss", "DPOConfig", "DPOTrainer"]
