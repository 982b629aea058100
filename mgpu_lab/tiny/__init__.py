"""The builder of the bundled `tiny` model: its corpus (`corpus`), training (`train`), quality figures (`quality`)."""
