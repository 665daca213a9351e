"""LLM-SRec: config, both training recipes (paper, cached), checkpoint, scorer, item table, hybrid."""
