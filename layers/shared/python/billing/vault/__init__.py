"""The card vault: the only code that ever holds a card number. Imported by the vault function alone.

envelope (AES-256-GCM under a KMS data key per card, bound to its tenant and token), kms (the key service
adapter), store (billing_vault.card_secrets, readable by billing_vault only), vault (tokenize, detokenize for a
declared purpose, shred; every attempt audited), provisioning (provider tokens made from a card), service (the
payment instruments API's use cases), wiring (settings and runtime of the vault function). docs/pci.md,
"Cardholder data", is the long form.
"""
