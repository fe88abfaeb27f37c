"""Figures of the book, one module per thesis concept; each function returns a matplotlib Figure."""
