"""Payment instruments: cards and SEPA debit mandates a tenant's customers pay with, kept as contracts.

An instrument is a row of billing.contracts (contract_type 'payment_instrument') owned by an entity contract, and
everything known about it is a history of billing.contract_term_attrs rows. Never a card number, a card
verification code or a full IBAN: the card number lives encrypted in the vault (billing.vault, imported only by
the vault function), and what is stored here is what a charge, a display or a velocity check needs (brand, last4,
expiry, IIN, a keyed fingerprint, the vault and provider tokens).

Pure modules: brands (the IIN table), cards (Luhn, lengths, expiry), iban (mod 97, country lengths), model (the
instrument, its lifecycle and its typed updates), ids. Adapters: fingerprints (keys from Secrets Manager),
repository (PostgreSQL, the vault's role), charging (what the execute function and the workers read), api (the
HTTP models and routes the vault function serves).
"""
