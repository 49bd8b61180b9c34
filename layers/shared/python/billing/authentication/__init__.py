"""3-D Secure authentication: EMV 3DS message model, states, liability shift.

Pure modules: protocol (message types and versions), states (the authentication state machine and EMV transStatus),
currency_numbers (ISO 4217 numeric codes the messages use), messages (parsing AReq/ARes/RReq/RRes/CReq/CRes/Erro
into frozen dataclasses), liability (scheme ECI tables), classification (what an ARes or RReq means for the flow).
"""
