"""The data layer: raw readers, `prepare_dataset`, `download_dataset`, and `load_prepared` (dataset.py)."""
