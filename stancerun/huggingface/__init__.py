"""What model plugins built on Hugging Face transformers share: where a model name loads from,
whether it can be loaded (found without torch), and loading it quietly."""
