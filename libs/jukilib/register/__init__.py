"""The register engine shared by the identity file and the annex file.

Both files are registers of the same kind (DESIGN §2): versioned records fed by municipalities'
change notifications, applied idempotently and in order, kept with their full history, and forwarded
to the agency through a transactional outbox. Each service supplies its record type and its field
rules (`RegisterBinding`); the engine knows nothing about 個人番号.
"""
