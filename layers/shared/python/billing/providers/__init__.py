"""Real payment service providers behind the PaymentProvider port."""
