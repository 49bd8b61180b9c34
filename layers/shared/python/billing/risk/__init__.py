"""Risk assessment before a charge is submitted: per-tenant declarative rules and their evaluation.

Pure: no I/O. attributes names what a rule may test and holds the values of one assessment (RiskFacts, velocity
counters included, which the caller counts in billing.risk_attempts); rules is the rule format and its validation;
defaults is the rule set a tenant without one of its own gets (version 0); evaluation turns a rule set and facts
into an Assessment (decision, score, the rules that fired and what they read).
"""
