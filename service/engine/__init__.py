"""Tokenize, batch and schedule: everything between an HTTP request and a backend's forward pass."""
