"""Outputs: a run's results in the forms people look at and load into other tools.

Class and score maps as Cloud-Optimized GeoTIFFs, quick-look PNGs of a scene with its predictions
drawn over it, and tile footprints as GeoJSON. A new output format goes here.
"""
