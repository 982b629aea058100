"""The bundled `tiny` model's builder: its corpus (`corpus`), its training run (`train`), its quality figures (`quality`)."""
