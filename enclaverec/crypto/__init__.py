"""The only place that touches cryptography's hazmat layer: keys, AEAD recipes, key wrapping."""
