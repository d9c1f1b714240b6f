"""Chat assistants: knowledge ingestion, hybrid retrieval, intents, generation backends, sessions.

Importing this package imports nothing heavy; PyTorch is needed only to export the encoder
(once per backbone) and by the ``local`` generation backend.
"""
