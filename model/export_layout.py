"""The file names of an exported folder; no torch here, so that `rmat status` can read them."""

WEIGHTS, CONFIG, TOKENIZER, TOKENIZER_MODEL, EXPORT = (
    "model.safetensors", "config.json", "tokenizer.json", "tokenizer.model", "export.json")
