"""Authentication of API callers: bearer tokens and the principal they carry."""
