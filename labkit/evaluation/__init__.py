"""Evaluating language models (chapter 17): perplexity and bits per byte, BLEU, ROUGE, EM/F1, pass@k, pairwise ratings, judges, contamination."""
