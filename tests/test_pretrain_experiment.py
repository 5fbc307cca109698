"""The shipped base model (data/tiny_llama) is a real result of ``python -m labkit.experiments.pretrain``.

The cheapest point of the experiment reruns here: the shipped settings, the same seed and one thread give the
logged first training losses (the warm-up learning rates do not depend on the run's length). The log's
claims (validation loss below the unigram baseline, the settings the module states) are checked against it."""
from __future__ import annotations

import json
import math

import pytest
import torch

from labkit.experiments.pretrain import SHIPPED_CONFIG, SHIPPED_TRAINING
from labkit.model import Llama, LlamaConfig, load_pretrained
from labkit.model.checkpoint import PRETRAINED_DIR
from labkit.train.loop import corpus_tokens, evaluate, train_lm

STEPS = 4


@pytest.fixture(scope="module")
def log():
    return json.loads((PRETRAINED_DIR / "train_log.json").read_text())


def test_log_states_the_shipped_settings(log):
    assert log["training"] == SHIPPED_TRAINING
    assert {k: log["config"][k] for k in SHIPPED_CONFIG} == SHIPPED_CONFIG
    assert len(log["history"]["train_loss"]) == SHIPPED_TRAINING["steps"]
    # the base model is far better than the unigram baseline and than the old 300-step model (4.77)
    assert log["val_loss"] < log["unigram_val_loss"] - 2.0
    assert log["val_loss"] < 3.8 and math.exp(log["val_loss"]) < 45


def test_first_steps_of_the_shipped_run_reproduce(log):
    tok = load_pretrained()[1]
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)                       # the command runs on one thread
    try:
        torch.manual_seed(SHIPPED_TRAINING["seed"])
        model = Llama(LlamaConfig(**SHIPPED_CONFIG))
        hist = train_lm(model, corpus_tokens(tok, "train"), corpus_tokens(tok, "val"), progress=False,
                        stop_after=STEPS, **SHIPPED_TRAINING)
    finally:
        torch.set_num_threads(n_threads)
    assert hist["lr"] == pytest.approx(log["history"]["lr"][:STEPS], rel=1e-12)
    assert hist["train_loss"] == pytest.approx(log["history"]["train_loss"][:STEPS], abs=1e-4)


def test_stop_after_is_checked():
    tok = load_pretrained()[1]
    with pytest.raises(ValueError, match="stop_after"):
        train_lm(Llama(LlamaConfig(**SHIPPED_CONFIG)), corpus_tokens(tok, "train"), corpus_tokens(tok, "val"),
                 progress=False, stop_after=0, **SHIPPED_TRAINING)


def test_shipped_weights_give_the_logged_validation_loss(log):
    model, tok = load_pretrained()
    val = evaluate(model, corpus_tokens(tok, "val"), log["val_eval"]["block_size"], log["val_eval"]["batch_size"])
    assert val == pytest.approx(log["val_loss"], abs=1e-4)
