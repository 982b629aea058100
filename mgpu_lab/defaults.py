"""The kit's defaults, in one place: the bundled model, the article's 100 new tokens and batches of 16."""

MODEL = "tiny"
MAX_NEW_TOKENS = 100
BATCH_SIZE = 16
