"""LLM backends behind one interface (base.LLMBackend); implementations are imported lazily by name."""
