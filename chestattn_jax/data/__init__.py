"""Data: class lists, raw readers, the prepare step, phantoms and grain pipelines."""
