"""Layer 7, align (chapters 15-16): log-probs, the Bradley-Terry reward model, GAE and PPO, KL estimators, DPO.
"""
from __future__ import annotations

from .ppo import (  # noqa: F401
    DPOConfig,
    DPOTrainer,
    PolicyWithValue,
    PPOConfig,
    PPOTrainer,
    RewardModel,
    ValueHead,
    bradley_terry_loss,
    discounted_returns,
    dpo_loss,
    exact_kl,
    frozen_copy,
    gae,
    kl_k1,
    kl_k2,
    kl_k3,
    logits_and_hidden,
    masked_mean,
    pairwise_accuracy,
    ppo_clip_loss,
    response_stats,
    sample_responses,
    train_reward_model,
    value_loss,
    whiten,
)

__all__ = ["bradley_terry_loss", "pairwise_accuracy", "gae", "discounted_returns", "whiten", "masked_mean", "ppo_clip_loss", "value_loss", "kl_k1", "kl_k2", "kl_k3", "exact_kl", "dpo_loss", "ValueHead", "RewardModel", "PolicyWithValue", "frozen_copy", "logits_and_hidden", "sample_responses", "response_stats", "train_reward_model", "PPOConfig", "PPOTrainer", "DPOConfig", "DPOTrainer"]
