"""Localize the pathology that a radiology report describes in a chest X-ray.

The notebooks and `python -m helpers` share this package; see DESIGN.md for the map.
"""
__version__ = "0.1.0"
