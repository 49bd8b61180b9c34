"""The reconciliation engine: one for the Adyen, Stripe and sandbox formats, streamed, in bounded memory.

Pure modules (keys, ours, fee_bands, matching, payouts, totals, findings) decide; `spool` keeps findings on local
disk between the pass over the files and the writes; `reading` turns a file's bytes into records; `engine` runs
one provider's period through them, asking the database only through the ExecutionLookup port (ports).
"""
