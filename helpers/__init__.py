"""Localize the pathology that a radiology report describes in a chest X-ray.

The notebooks and `python -m helpers` share this package; the README's "Layout" section is the map
(one module per concern, each layer importing only those below it).
"""
__version__ = "0.2.0"
