"""Providers' own settlement report formats (Adyen Settlement Detail Report, Stripe itemized payout reconciliation).

Pure, strict, streaming parsers that turn each row into a ProviderRecord or a LineError naming the line; detect
picks the parser for a file's header. Nothing here does I/O: the caller feeds lines (from S3 or a local file).
"""
