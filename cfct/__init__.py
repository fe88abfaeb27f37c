"""cfct: the executable companion to "From Cats to CTs" (Juodelyte, 2024).

Modules map to thesis concepts; nothing runs at import time. See DESIGN.md for the map.
"""

__version__ = "0.1.0"
