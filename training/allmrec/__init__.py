"""A-LLMRec: configs, stage 1, stage 2, the genre prompt, the cold-item split, checkpoints, scorer."""
