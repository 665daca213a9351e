"""Shared by every model package: errors, config flags, seeding, device/dtype policy, torchrun, the LLM."""
