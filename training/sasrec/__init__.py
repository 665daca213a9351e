"""SASRec, the CF teacher: config, training, checkpoint directory, scorer. Imports no other model package."""
